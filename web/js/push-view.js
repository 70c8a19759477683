// The top bar's notifications control: "Enable notifications" (or "Turn off
// notifications") and a line saying why it is in the state it is.

import { h } from './dom.js';
import { PushStatus } from './push.js';

export class PushView {
  /** @param {import('./push.js').WebPush} push */
  constructor(push) {
    this.push = push;
    this.button = h('button', {
      type: 'button',
      class: 'link notify',
      'data-testid': 'notifications',
      onclick: () => (this.push.status === PushStatus.ON ? this.push.disable() : this.push.enable()),
    });
    this.note = h('span', { class: 'notify-note', role: 'status', 'data-testid': 'notifications-note' });
    this.el = h('span', { class: 'notify-control' }, this.note, this.button);
    this.onChange = () => this.render();
    push.addEventListener('change', this.onChange);
    this.render();
  }

  render() {
    const { status, message } = this.push;
    this.el.hidden = status === PushStatus.UNSUPPORTED;
    this.el.dataset.status = status;
    // While working, the label stays what was clicked.
    if (status !== PushStatus.WORKING) {
      const label = status === PushStatus.ON ? 'Turn off notifications' : 'Enable notifications';
      if (this.button.textContent !== label) this.button.textContent = label;
    }
    this.button.disabled = status === PushStatus.WORKING || status === PushStatus.BLOCKED;
    this.button.setAttribute('aria-pressed', status === PushStatus.ON ? 'true' : 'false');
    const note = message || (status === PushStatus.ON ? 'Notifications on' : '');
    if (this.note.textContent !== note) this.note.textContent = note;
  }

  destroy() {
    this.push.removeEventListener('change', this.onChange);
  }
}
