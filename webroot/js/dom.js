// Small DOM helpers.

/** Creates an element with attributes (on* keys become listeners) and children (strings become text). */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else if (value !== false && value != null) element.setAttribute(key, value === true ? '' : value);
  }
  element.append(...children);
  return element;
}

/** Copies text; navigator.clipboard exists only on https or localhost, so a page on a LAN falls back. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = el('textarea', { readonly: true, style: 'position:fixed;opacity:0' });
  area.value = text;
  document.body.append(area);
  area.select();
  const copied = document.execCommand('copy');
  area.remove();
  if (!copied) throw new Error('the browser refused to copy');
}

/** Appends a token as its own span, so that hovering it can show its layers. */
export function tokenSpan(token, index, onPick) {
  return el('span', { class: 'tok', 'data-index': index, onmouseenter: () => onPick(index) }, token.text);
}
