// The connection indicator in the top bar: Connecting… / Online /
// Offline · retrying in 4 s [Retry now]. Screen readers hear state changes
// only, not the countdown ticking.

import { h, fill } from './dom.js';

const LABELS = {
  idle: 'Connecting…',
  connecting: 'Connecting…',
  online: 'Online',
  offline: 'Offline',
  stopped: 'Signed out',
};

export class StatusView {
  /** @param {import('./connection.js').Connection} connection */
  constructor(connection) {
    this.connection = connection;
    this.label = h('span', { class: 'conn-label' });
    this.countdown = h('span', { class: 'conn-countdown', 'aria-hidden': 'true' });
    this.retry = h(
      'button',
      { type: 'button', class: 'link conn-retry', onclick: () => this.connection.reconnectNow() },
      'Retry now',
    );
    this.el = h(
      'div',
      { class: 'conn', role: 'status', 'data-testid': 'connection' },
      h('span', { class: 'conn-dot', 'aria-hidden': 'true' }),
      this.label,
      this.countdown,
      this.retry,
    );
    this.timer = null;
    this.render();
  }

  render() {
    const { status, retryAt } = this.connection.state;
    this.el.dataset.status = status;
    const label = status === 'offline' && retryAt ? 'Offline, reconnecting' : LABELS[status];
    if (this.label.textContent !== label) this.label.textContent = label;
    this.retry.hidden = status !== 'offline';
    if (status === 'offline' && retryAt) {
      const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      fill(this.countdown, seconds > 0 ? ` in ${seconds} s` : '…');
      if (!this.timer) this.timer = setInterval(() => this.render(), 500);
    } else {
      this.countdown.textContent = '';
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  destroy() {
    clearInterval(this.timer);
  }
}
