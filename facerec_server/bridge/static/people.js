// People: the gallery (the core's Gallery through the bridge): people, their stored face
// chips, rename (the gallery's rename) and forget. Naming anonymous identities here is not
// done yet (use facerec-enroll name or the ~/name service).
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

async function load() {
  const gallery = await api('/api/people');
  const cards = gallery.people.map((person) => card(person, gallery.can_rename));
  $('people-list').replaceChildren(...cards);
  if (!cards.length) $('people-list').append(element('p', { class: 'status', text: 'Nobody is enrolled yet.' }));
  $('anonymous-section').hidden = !(gallery.anonymous && gallery.anonymous.length);
}

export function enter() {
  status('');
  load().catch((error) => status(error.message));
}

export function leave() {}
