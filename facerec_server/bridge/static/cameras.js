// Cameras: every input the recognition serves (ROS topics of facerec_server instances and
// clients of this bridge) with its newest annotated frame, refreshed about once a second.
import { api, bytes, element } from './common.js';

const $ = (id) => document.getElementById(id);
let timer = null;
const cards = new Map();

function number(value, unit = '') { return value === null || value === undefined ? '-' : `${value}${unit}`; }

function update(input) {
  let card = cards.get(input.id);
  if (!card) {
    card = element('div', { class: 'card camera' });
    card.dataset.id = input.id;
    card.innerHTML = '<h3><span class="kind"></span><span class="camera-name"></span></h3>'
      + '<img class="frame" alt="newest annotated frame">'
      + '<table class="numbers"><tbody></tbody></table>';
    cards.set(input.id, card);
    $('camera-list').append(card);
  }
  const kind = card.querySelector('.kind');
  kind.className = `kind ${input.kind}`;
  kind.textContent = input.kind === 'ros' ? 'ROS topic' : 'bridge client';
  card.querySelector('.camera-name').textContent = input.name;
  const rows = [
    ['server', input.server], ['state', input.connected ? 'active' : 'gone'],
    ['results per second', number(input.fps)], ['latency', number(input.latency_ms, ' ms')],
    ['received', input.received], ['processed', input.processed], ['dropped', input.dropped],
  ];
  if (input.kind === 'client') rows.push(['bandwidth in', `${bytes(input.bytes_per_s)}/s, ${bytes(input.bytes)}`]);
  card.querySelector('tbody').replaceChildren(...rows.map(([k, v]) => element('tr', {},
    element('td', { text: k }), element('td', { text: String(v) }))));
  if (input.has_frame) {
    card.querySelector('img').src = `/api/cameras/frame?id=${encodeURIComponent(input.id)}&t=${Date.now()}`;
  }
}

async function refresh() {
  try {
    const { inputs } = await api('/api/cameras');
    const seen = new Set(inputs.map((i) => i.id));
    for (const [id, card] of cards) if (!seen.has(id)) { card.remove(); cards.delete(id); }
    inputs.forEach(update);
  } catch (error) { /* shown again next time */ }
}

export function enter() {
  refresh();
  timer = setInterval(refresh, 1000);
}

export function leave() { clearInterval(timer); timer = null; }
