// Statistics: recognitions per person, results per second, latency and bandwidth of every
// input over time (the bridge keeps the history: /api/stats), drawn with Chart.js.
import { api } from './common.js';

const $ = (id) => document.getElementById(id);
const COLOURS = ['#4fc3f7', '#ffb74d', '#81c784', '#e57373', '#ba68c8', '#fff176', '#4db6ac', '#f06292'];
const KEEP = 300; // samples on the charts (5 minutes)
let timer = null;
let last = 0;
const samples = [];
let totals = {};
let names = {};
const charts = {};

function label(t) { return new Date(t * 1000).toLocaleTimeString(); }

function lineChart(id) {
  return new window.Chart($(id), {
    type: 'line', data: { labels: [], datasets: [] },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
               elements: { point: { radius: 0 } }, interaction: { mode: 'nearest', intersect: false },
               scales: { x: { ticks: { color: '#9aa7b3', maxTicksLimit: 6 } },
                         y: { beginAtZero: true, ticks: { color: '#9aa7b3' } } },
               plugins: { legend: { labels: { color: '#e8ecef' } } } },
  });
}

function makeCharts() {
  if (charts.people || !window.Chart) return;
  charts.people = new window.Chart($('chart-people'), {
    type: 'doughnut', data: { labels: [], datasets: [{ data: [], backgroundColor: COLOURS }] },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
               plugins: { legend: { position: 'right', labels: { color: '#e8ecef' } } } },
  });
  for (const name of ['recognitions', 'fps', 'latency', 'bandwidth', 'bandwidth-total']) {
    charts[name] = lineChart(`chart-${name}`);
  }
}

function series(chart, keys, value, title) {
  chart.data.labels = samples.map((s) => label(s.t));
  chart.data.datasets = keys.map((key, i) => ({
    label: title(key), data: samples.map((s) => value(s, key)), borderColor: COLOURS[i % COLOURS.length],
    backgroundColor: COLOURS[i % COLOURS.length], spanGaps: true, tension: 0.2 }));
  chart.update();
}

function inputName(key) {
  const input = names[key];
  return input ? (input.kind === 'ros' ? input.name : `${input.name} (client)`) : key;
}

function draw() {
  makeCharts();
  if (!charts.people) return;
  const people = Object.keys(totals).sort();
  charts.people.data.labels = people;
  charts.people.data.datasets[0].data = people.map((p) => totals[p]);
  charts.people.update();
  const inputs = [...new Set(samples.flatMap((s) => Object.keys(s.inputs)))].sort();
  const withBytes = inputs.filter((k) => samples.some((s) => s.inputs[k] && s.inputs[k].bytes > 0));
  const seenPeople = [...new Set(samples.flatMap((s) => Object.keys(s.recognitions)))].sort();
  const field = (name, scale = 1) => (s, key) => (s.inputs[key] && s.inputs[key][name] !== null
    ? s.inputs[key][name] * scale : null);
  series(charts.recognitions, seenPeople, (s, p) => s.recognitions[p] || 0, (p) => p);
  series(charts.fps, inputs, field('fps'), inputName);
  series(charts.latency, inputs, field('latency_ms'), inputName);
  series(charts.bandwidth, withBytes, field('bytes_per_s', 1 / 1024), inputName);
  series(charts['bandwidth-total'], withBytes, field('bytes', 1 / 1024 / 1024), inputName);
  $('stats-status').textContent = `${samples.length} samples, ${inputs.length} input(s), `
    + `${people.reduce((n, p) => n + totals[p], 0)} recognitions`;
}

async function refresh() {
  try {
    const stats = await api(`/api/stats?since=${last}`);
    for (const sample of stats.history) samples.push(sample);
    samples.splice(0, Math.max(0, samples.length - KEEP));
    if (samples.length) last = samples[samples.length - 1].t;
    totals = stats.recognitions;
    names = { ...names, ...stats.inputs };
    draw();
  } catch (error) { $('stats-status').textContent = error.message; }
}

export function enter() {
  refresh();
  timer = setInterval(refresh, 2000);
}

export function leave() { clearInterval(timer); timer = null; }
