// The page's views (Live, Enroll, People, Cameras, Statistics), switched by the URL's #hash.
import { api } from './common.js';
import * as live from './live.js';
import * as enroll from './enroll.js';
import * as people from './people.js';
import * as cameras from './cameras.js';
import * as statistics from './stats.js';

const pages = { live, enroll, people, cameras, statistics };
let current = null;

function show() {
  const name = (location.hash || '#live').slice(1);
  const page = pages[name] ? name : 'live';
  if (current === page) return;
  if (current && pages[current].leave) pages[current].leave();
  for (const section of document.querySelectorAll('.page')) {
    section.classList.toggle('active', section.id === `page-${page}`);
  }
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.id === `nav-${page}`);
  }
  current = page;
  pages[page].enter();
}

window.addEventListener('hashchange', show);
api('/api/session').then((session) => {
  document.getElementById('who').textContent = `${session.name} (${session.auth})`;
  live.configure(session);
}).catch(() => {});
show();
