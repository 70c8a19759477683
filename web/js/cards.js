// People and listings as the views show them: avatars (the identity
// provider's picture, else initials) and listing cards (the operator's title,
// price and photo for what a conversation is about). `formatPrice` and
// `initials` touch no DOM, so unit tests run them in node.

import { h } from './dom.js';

/**
 * `{amount_minor, currency}` in the user's locale: minor units per the
 * currency's own digits (cents for EUR, none for JPY, fils for BHD), and no
 * decimals for a whole amount ("€12,500", "€12,500.50"). An amount Intl
 * cannot format (an unknown currency) shows as "1250000 XXX".
 */
export function formatPrice(price, locale = undefined) {
  if (!price || !Number.isFinite(price.amount_minor) || typeof price.currency !== 'string') return '';
  try {
    const digits = new Intl.NumberFormat('en', { style: 'currency', currency: price.currency })
      .resolvedOptions().maximumFractionDigits;
    const scale = 10 ** digits;
    const whole = price.amount_minor % scale === 0;
    return new Intl.NumberFormat(locale, {
      style: 'currency',
      currency: price.currency,
      minimumFractionDigits: whole ? 0 : digits,
      maximumFractionDigits: digits,
    }).format(price.amount_minor / scale);
  } catch {
    return `${price.amount_minor} ${price.currency}`;
  }
}

/** "Bob Smith" → "BS", "bob" → "B", "Marie-Claire d'Arc" → "MD". */
export function initials(name) {
  const words = String(name ?? '').trim().split(/\s+/).filter(Boolean);
  if (!words.length) return '?';
  const first = [...words[0]][0] ?? '';
  const last = words.length > 1 ? [...words[words.length - 1]][0] ?? '' : '';
  return (first + last).toUpperCase();
}

/** Only `https:` pictures are shown (the page's policy allows no other). */
function safeImageUrl(url) {
  return typeof url === 'string' && url.startsWith('https://') ? url : '';
}

/**
 * An avatar: `{name, url, online}`. The picture when there is one (initials
 * again if it fails to load), else the initials. Decorative: the name is
 * always written next to it.
 */
export function avatar({ name, url, online = false, size = '' }) {
  const el = h('span', {
    class: size ? `avatar ${size}` : 'avatar',
    'aria-hidden': 'true',
    dataset: { online: online ? 'yes' : 'no' },
  });
  setAvatar(el, { name, url });
  return el;
}

/** Fills an existing avatar element (the chat header keeps its own). */
export function setAvatar(el, { name, url }) {
  const src = safeImageUrl(url);
  const text = initials(name);
  if (el.dataset.src === src && el.dataset.initials === text) return el;
  el.dataset.src = src;
  el.dataset.initials = text;
  if (!src) {
    el.replaceChildren(text);
    return el;
  }
  const img = h('img', {
    src,
    alt: '',
    referrerpolicy: 'no-referrer',
    decoding: 'async',
    'data-testid': 'avatar-image',
  });
  img.addEventListener('error', () => {
    if (el.dataset.src === src) el.replaceChildren(text);
  });
  el.replaceChildren(img);
  return el;
}

/**
 * A listing card: `{title, price?, photo_url?}` as the server sends it.
 * `compact` for the conversation list (a thumbnail and one line), else the
 * chat header's card.
 */
export function listingCard(listing, { compact = false } = {}) {
  if (!listing?.title) return null;
  const photo = safeImageUrl(listing.photo_url);
  const price = formatPrice(listing.price);
  return h(
    'span',
    { class: compact ? 'listing-card compact' : 'listing-card', 'data-testid': 'listing-card' },
    photo
      ? h('img', {
          class: 'listing-photo',
          src: photo,
          alt: '',
          referrerpolicy: 'no-referrer',
          decoding: 'async',
          loading: 'lazy',
          'data-testid': 'listing-photo',
        })
      : null,
    h(
      'span',
      { class: 'listing-text' },
      h('span', { class: 'listing-title', 'data-testid': 'listing-title' }, listing.title),
      price ? h('span', { class: 'listing-price', 'data-testid': 'listing-price' }, price) : null,
    ),
  );
}
