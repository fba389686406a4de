// People: the gallery (the core's Gallery through the bridge): people, their stored face
// chips, rename (the gallery's rename) and forget; the anonymous identities the server made
// of strangers ("Not introduced yet"), each named here (the gallery's name_anonymous: a new
// person, or added to an existing one).
import { api, element, postJSON } from './common.js';

const $ = (id) => document.getElementById(id);

function status(text) { $('people-status').textContent = text; }

function chipURL(name, index) {
  return `/api/people/chip?name=${encodeURIComponent(name)}&index=${index}`;
}

function card(person, canRename) {
  const chips = element('div', { class: 'chips' });
  for (let i = 0; i < person.chips; i += 1) {
    chips.append(element('img', { class: 'chip', src: chipURL(person.name, i), alt: `${person.name} ${i + 1}` }));
  }
  const newName = element('input', { type: 'text', maxlength: '64', placeholder: 'new name', class: 'rename-input' });
  const rename = element('button', { class: 'rename', text: 'Rename' });
  if (!canRename) {
    newName.disabled = true;
    rename.disabled = true;
    rename.title = 'this gallery cannot rename yet';
  }
  rename.addEventListener('click', async () => {
    try {
      const done = await postJSON('/api/people/rename', { name: person.name, new_name: newName.value.trim() });
      status(done.message);
      await load();
    } catch (error) { status(error.message); }
  });
  const forget = element('button', { class: 'forget', text: 'Forget' });
  forget.addEventListener('click', async () => {
    if (forget.dataset.armed !== 'yes') {  // a second click confirms
      forget.dataset.armed = 'yes';
      forget.textContent = `Really forget ${person.name}?`;
      return;
    }
    try {
      const done = await postJSON('/api/people/forget', { name: person.name });
      status(done.message);
      await load();
    } catch (error) { status(error.message); }
  });
  const box = element('div', { class: 'card person' },
    element('h3', { class: 'person-name', text: person.name }),
    element('p', { class: 'note', text: `${person.samples} sample${person.samples === 1 ? '' : 's'}` }),
    chips,
    element('div', { class: 'actions' }, newName, rename, forget));
  box.dataset.name = person.name;
  return box;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : 'never';
}

function stranger(identity, canName) {
  const chips = element('div', { class: 'chips' });
  for (let i = 0; i < identity.chips; i += 1) {
    chips.append(element('img', { class: 'chip', src: chipURL(identity.name, i), alt: `${identity.name} ${i + 1}` }));
  }
  if (!identity.chips) chips.append(element('p', { class: 'note', text: 'No face pictures stored with its samples.' }));
  const where = identity.inputs.length ? ` on ${identity.inputs.join(', ')}` : '';
  const name = element('input', { type: 'text', maxlength: '64', placeholder: 'who is this?', class: 'name-input', list: 'known-names' });
  const button = element('button', { class: 'name-button', text: 'Name' });
  if (!canName) {
    name.disabled = true;
    button.disabled = true;
  }
  const submit = async () => {
    try {
      const done = await postJSON('/api/people/name', { anonymous_id: identity.name, name: name.value.trim() });
      status(done.message);
      await load();
    } catch (error) { status(error.message); }
  };
  button.addEventListener('click', submit);
  name.addEventListener('keydown', (event) => { if (event.key === 'Enter') submit(); });
  const box = element('div', { class: 'card anonymous' },
    element('h3', { class: 'person-name', text: identity.name }),
    element('p', { class: 'note', text: `${identity.samples} sample${identity.samples === 1 ? '' : 's'}; last seen ${when(identity.last_seen)}${where}` }),
    chips,
    element('div', { class: 'actions' }, name, button));
  box.dataset.name = identity.name;
  return box;
}

async function load() {
  const gallery = await api('/api/people');
  const cards = gallery.people.map((person) => card(person, gallery.can_rename));
  $('people-list').replaceChildren(...cards);
  if (!cards.length) $('people-list').append(element('p', { class: 'status', text: 'Nobody is enrolled yet.' }));
  $('known-names').replaceChildren(...gallery.people.map((person) => element('option', { value: person.name })));
  const strangers = gallery.anonymous || [];
  $('anonymous-list').replaceChildren(...strangers.map((identity) => stranger(identity, gallery.can_name)));
  $('anonymous-section').hidden = !strangers.length;
  const more = gallery.anonymous_total - strangers.length;
  $('anonymous-more').hidden = !(more > 0);
  $('anonymous-more').textContent = more > 0 ? `${more} more, seen longer ago, are not listed.` : '';
}

function refresh() {
  status('');
  load().catch((error) => status(error.message));
}

$('people-refresh').addEventListener('click', refresh);

export function enter() { refresh(); }

export function leave() {}
