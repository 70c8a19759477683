// Two small DOM helpers: `h` builds elements (text always goes in as text,
// never as HTML), `reconcile` keeps a list's children in step with data by
// key, touching only the items that changed. That keeps scrolling, focus and
// screen-reader live regions stable while messages stream in.

/**
 * `h('button', {class: 'x', onclick: fn, 'aria-label': 'Send'}, 'Send')`.
 * Props starting with `on` are listeners; `dataset` and `style` take objects;
 * `false`/`null`/`undefined` props and children are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (name === 'class') {
      el.className = value;
    } else if (name in el && typeof value !== 'string') {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * Makes `parent`'s children match `items` in order. `render(item, el)`
 * updates `el` in place (or creates it when `el` is null) and returns it;
 * it may skip work when `sig(item)` is unchanged since the last render.
 */
export function reconcile(parent, items, key, render, sig = () => '') {
  const existing = new Map();
  for (const child of parent.children) existing.set(child.dataset.key, child);
  let cursor = parent.firstElementChild;
  for (const item of items) {
    const k = key(item);
    const signature = sig(item);
    let el = existing.get(k) ?? null;
    existing.delete(k);
    if (!el || el.dataset.sig !== signature) {
      el = render(item, el);
      el.dataset.key = k;
      el.dataset.sig = signature;
    }
    if (el === cursor) {
      cursor = cursor.nextElementSibling;
    } else {
      parent.insertBefore(el, cursor);
    }
  }
  for (const el of existing.values()) el.remove();
}

/** "12:03", or "Mon 12:03" / "3 Mar 12:03" for older times. */
export function shortTime(ms, now = Date.now()) {
  if (!ms) return '';
  const date = new Date(ms);
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const age = now - ms;
  if (age < 20 * 3600_000 && new Date(now).getDate() === date.getDate()) return time;
  if (age < 6 * 86400_000) return `${date.toLocaleDateString([], { weekday: 'short' })} ${time}`;
  return `${date.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}`;
}

/** Full date and time, for `title` and `datetime`. */
export function longTime(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}
