// The sign-in screen: paste a JWT. (A `#/login?token=...` link skips it.)

import { h } from './dom.js';

/**
 * @param {HTMLElement} root
 * @param {{error?: string, onSignIn: (token: string) => string | null}} options
 *   `onSignIn` returns an error to show, or null once signed in.
 */
export function renderLogin(root, { error, onSignIn }) {
  const errorLine = h('p', { id: 'token-error', class: 'error', role: 'alert' }, error ?? '');
  const input = h('textarea', {
    id: 'token',
    name: 'token',
    rows: 5,
    required: true,
    autocomplete: 'off',
    autocapitalize: 'off',
    spellcheck: 'false',
    placeholder: 'eyJhbGciOi…',
    'aria-describedby': 'token-help token-error',
    'aria-invalid': error ? 'true' : 'false',
  });
  const form = h(
    'form',
    {
      class: 'login-form',
      onsubmit: (event) => {
        event.preventDefault();
        const problem = onSignIn(input.value);
        if (problem) {
          errorLine.textContent = problem;
          input.setAttribute('aria-invalid', 'true');
          input.focus();
        }
      },
    },
    h('label', { for: 'token' }, 'Access token'),
    input,
    h(
      'p',
      { id: 'token-help', class: 'hint' },
      'The car app gives you one. For development, mint one with ',
      h('code', {}, 'turbochat-router --config configs/dev.toml mint-token --sub alice'),
      '.',
    ),
    errorLine,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  );
  root.replaceChildren(
    h(
      'main',
      { class: 'login', 'aria-labelledby': 'login-title' },
      h(
        'div',
        { class: 'card' },
        h('h1', { id: 'login-title' }, h('span', { class: 'logo', 'aria-hidden': 'true' }), 'turbochat'),
        h('p', { class: 'lead' }, 'Sign in to chat with buyers and sellers.'),
        form,
      ),
    ),
  );
  input.focus();
}
