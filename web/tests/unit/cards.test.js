// Prices and initials as the list and the chat header write them.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatPrice, initials } from '../../js/cards.js';

test('prices are minor units scaled by the currency\'s own digits', () => {
  assert.equal(formatPrice({ amount_minor: 1890000, currency: 'EUR' }, 'en-US'), '€18,900');
  assert.equal(formatPrice({ amount_minor: 1890050, currency: 'EUR' }, 'en-US'), '€18,900.50');
  assert.equal(formatPrice({ amount_minor: 1250000, currency: 'EUR' }, 'de-DE'), '12.500\u00a0€');
  // No minor unit: yen are counted whole.
  assert.equal(formatPrice({ amount_minor: 2500000, currency: 'JPY' }, 'en-US'), '¥2,500,000');
  // Three digits: fils.
  assert.equal(formatPrice({ amount_minor: 12345, currency: 'BHD' }, 'en-US'), 'BHD\u00a012.345');
});

test('what cannot be formatted is written plainly, and nothing is not a price', () => {
  assert.equal(formatPrice({ amount_minor: 100, currency: 'NOT A CURRENCY' }, 'en-US'), '100 NOT A CURRENCY');
  assert.equal(formatPrice(undefined), '');
  assert.equal(formatPrice({ currency: 'EUR' }), '');
});

test('initials take the first and last words', () => {
  assert.equal(initials('Bob Smith'), 'BS');
  assert.equal(initials('bob'), 'B');
  assert.equal(initials('  Marie-Claire  de la Fontaine '), 'MF');
  assert.equal(initials('émile zola'), 'ÉZ');
  assert.equal(initials(''), '?');
  assert.equal(initials(undefined), '?');
});
