"use strict";
// natlab's browser agent page: one RTCPeerConnection and one data channel, driven by the
// Python driver (lab/agents/browser/call.py) over its local HTTP bridge (bridge.py). The page
// long-polls "poll" for commands, answers each on "reply" and reports what the browser does on
// "event". It decides nothing about the call: the driver does, for Chromium and Firefox alike.

const BASE = location.pathname.replace(/[^/]*$/, ""); // "/<token>/"
const PING = [0x4e, 0x4c, 0x50], PONG = [0x4e, 0x4c, 0x52], BULK = [0x4e, 0x4c, 0x54]; // NLP NLR NLT
const PING_SIZE = 64, DATAGRAM_SIZE = 1000; // lab.agents.contract
const MAX_POLL_FAILURES = 50; // the driver is gone: stop polling (about 10 s)
const BULK_BUFFER_MAX = 4 * 1024 * 1024; // bytes queued in the channel before the sender waits

let pc = null;
let channel = null;
let connectStart = null; // performance.now() when the peer's description was handed in
let connectedAt = null; // first iceConnectionState connected/completed
const pendingPings = new Map();
const bulk = { bytes: 0, packets: 0, last: null };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function post(path, body) {
  const response = await fetch(BASE + path, {
    method: "POST",
    body: JSON.stringify(body ?? {}),
    headers: { "Content-Type": "application/json" },
    cache: "no-store",
  });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function event(kind, detail) {
  post("event", { kind, detail: detail ?? null }).catch(() => {});
}

window.addEventListener("error", (e) => event("page-error", String(e.message)));
window.addEventListener("unhandledrejection", (e) => event("page-error", String(e.reason)));

function prefixed(prefix, size) {
  const packet = new Uint8Array(size);
  packet.set(prefix);
  return packet;
}

function hasPrefix(bytes, prefix) {
  return bytes.length >= 3 && bytes[0] === prefix[0] && bytes[1] === prefix[1] && bytes[2] === prefix[2];
}

function onMessage(e) {
  if (!(e.data instanceof ArrayBuffer)) return;
  const bytes = new Uint8Array(e.data);
  if (hasPrefix(bytes, PING)) {
    const pong = new Uint8Array(bytes);
    pong.set(PONG);
    if (channel && channel.readyState === "open") channel.send(pong);
  } else if (hasPrefix(bytes, PONG) && bytes.length >= 7) {
    const seq = new DataView(e.data).getUint32(3);
    const waiter = pendingPings.get(seq);
    if (waiter) waiter(performance.now());
  } else if (hasPrefix(bytes, BULK)) {
    bulk.bytes += bytes.length;
    bulk.packets += 1;
    bulk.last = performance.now();
  }
}

// --- statistics -------------------------------------------------------------------------

function candidateStats(report) {
  if (!report) return null;
  return {
    address: report.address ?? report.ip ?? null,
    port: report.port ?? null,
    candidateType: report.candidateType ?? null,
    protocol: report.protocol ?? null,
    relayProtocol: report.relayProtocol ?? null,
    url: report.url ?? null,
    priority: report.priority ?? null,
  };
}

async function statsByType() {
  const reports = await pc.getStats();
  const byId = new Map();
  reports.forEach((r) => byId.set(r.id, r));
  return byId;
}

// The selected pair: the transport's selectedCandidatePairId (Chromium), else the pair marked
// selected (Firefox), else a nominated pair that succeeded.
function selectedPair(byId) {
  const all = [...byId.values()];
  for (const r of all) {
    if (r.type === "transport" && r.selectedCandidatePairId && byId.has(r.selectedCandidatePairId)) {
      return byId.get(r.selectedCandidatePairId);
    }
  }
  const pairs = all.filter((r) => r.type === "candidate-pair");
  return pairs.find((p) => p.selected === true) ??
    pairs.find((p) => p.nominated === true && p.state === "succeeded") ?? null;
}

async function pathStats() {
  const byId = await statsByType();
  const pairs = [...byId.values()].filter((r) => r.type === "candidate-pair");
  const counted = pairs.filter((p) => typeof p.requestsSent === "number");
  const pair = selectedPair(byId);
  return {
    pairs: pairs.length,
    requestsSent: counted.length ? counted.reduce((n, p) => n + p.requestsSent, 0) : null,
    selected: pair && {
      state: pair.state ?? null,
      nominated: pair.nominated ?? null,
      // Firefox leaves currentRoundTripTime at 0 with no response counted: not a measurement
      rtt: pair.responsesReceived > 0 ? pair.currentRoundTripTime ?? null : null,
      raw: pair,
      local: candidateStats(byId.get(pair.localCandidateId)),
      remote: candidateStats(byId.get(pair.remoteCandidateId)),
    },
  };
}

async function localCandidates() {
  const byId = await statsByType();
  return [...byId.values()].filter((r) => r.type === "local-candidate").map(candidateStats);
}

async function gathered(timeoutMs) {
  const started = performance.now();
  const deadline = started + timeoutMs;
  while (pc.iceGatheringState !== "complete" && performance.now() < deadline) await sleep(10);
  return {
    sdp: pc.localDescription.sdp,
    complete: pc.iceGatheringState === "complete",
    gatherMs: performance.now() - started,
    candidates: await localCandidates(),
  };
}

// --- commands ---------------------------------------------------------------------------

const ops = {
  hello() {
    return { userAgent: navigator.userAgent };
  },

  async start({ iceServers, policy, controlling, gatherTimeoutMs }) {
    pc = new RTCPeerConnection({
      iceServers,
      iceTransportPolicy: policy,
      bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require",
    });
    pc.oniceconnectionstatechange = () => {
      const state = pc.iceConnectionState;
      if ((state === "connected" || state === "completed") && connectedAt === null) {
        connectedAt = performance.now();
      }
      event("ice-state", state);
    };
    pc.onicegatheringstatechange = () => event("gathering-state", pc.iceGatheringState);
    pc.onicecandidate = (e) => {
      if (e.candidate && e.candidate.candidate) event("candidate", e.candidate.candidate);
    };
    pc.onicecandidateerror = (e) =>
      event("candidate-error", `${e.url ?? "?"} ${e.errorCode ?? "?"} ${e.errorText ?? ""}`);
    // Negotiated on both sides (id 0): no in-band DCEP open needed before the first message.
    channel = pc.createDataChannel("natlab", { negotiated: true, id: 0 });
    channel.binaryType = "arraybuffer";
    channel.onmessage = onMessage;
    channel.onopen = () => event("channel", "open");
    channel.onclose = () => event("channel", "closed");
    if (!controlling) return {};
    await pc.setLocalDescription(await pc.createOffer());
    return gathered(gatherTimeoutMs);
  },

  // Time to connect runs from the moment the peer's description is handed to the browser.
  async answer({ sdp, gatherTimeoutMs }) {
    connectStart = performance.now();
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    return gathered(gatherTimeoutMs);
  },

  async remoteAnswer({ sdp }) {
    connectStart = performance.now();
    await pc.setRemoteDescription({ type: "answer", sdp });
    return {};
  },

  async waitConnected({ timeoutMs }) {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const state = pc.iceConnectionState;
      if (state === "failed" || state === "closed") {
        return { state, connectMs: null, path: await pathStats() };
      }
      if (connectedAt !== null) {
        const path = await pathStats();
        if (path.selected && path.selected.local && path.selected.remote) {
          const connectMs = Math.max(0, connectedAt - (connectStart ?? connectedAt));
          return { state, connectMs, path };
        }
      }
      await sleep(10);
    }
    return { state: "timeout", connectMs: null, path: await pathStats() };
  },

  // natlab gather (lab/agents/browser/gather.py): a peer connection of its own per call, so
  // every candidate and error it reports belongs to the ICE servers of this call. Candidates
  // and errors are kept as they trickle in, each with its time since the call began (the
  // samples' Trickle ICE page shows the same); getStats adds each candidate's relayProtocol.
  async gather({ iceServers, policy, timeoutMs }) {
    const started = performance.now();
    const since = () => Math.round((performance.now() - started) * 10) / 10;
    const probe = new RTCPeerConnection({ iceServers, iceTransportPolicy: policy });
    const candidates = [];
    const errors = [];
    probe.onicecandidate = (e) => {
      if (!e.candidate || !e.candidate.candidate) return;
      candidates.push({
        candidate: e.candidate.candidate,
        ms: since(),
        relayProtocol: e.candidate.relayProtocol ?? null,
        url: e.candidate.url ?? e.url ?? null,
      });
    };
    probe.onicecandidateerror = (e) =>
      errors.push({
        code: e.errorCode ?? null,
        text: e.errorText ?? "",
        url: e.url ?? null,
        address: e.address ?? null,
        port: e.port ?? null,
        ms: since(),
      });
    probe.createDataChannel("natlab-gather");
    try {
      await probe.setLocalDescription(await probe.createOffer());
      const deadline = started + timeoutMs;
      while (probe.iceGatheringState !== "complete" && performance.now() < deadline) await sleep(10);
      const complete = probe.iceGatheringState === "complete";
      const gatherMs = since();
      const stats = [];
      (await probe.getStats()).forEach((r) => {
        if (r.type === "local-candidate") stats.push(candidateStats(r));
      });
      return { candidates, errors, stats, complete, gatherMs, userAgent: navigator.userAgent };
    } finally {
      probe.close();
    }
  },

  async stats() {
    return { state: pc.iceConnectionState, path: await pathStats() };
  },

  async waitChannel({ timeoutMs }) {
    const deadline = performance.now() + timeoutMs;
    while (channel.readyState !== "open" && performance.now() < deadline) await sleep(10);
    return { state: channel.readyState };
  },

  async ping({ count, timeoutMs }) {
    const rtts = [];
    for (let seq = 0; seq < count; seq++) {
      if (channel.readyState !== "open") break;
      const packet = prefixed(PING, PING_SIZE);
      new DataView(packet.buffer).setUint32(3, seq);
      const sentAt = performance.now();
      const answered = new Promise((resolve) => {
        pendingPings.set(seq, resolve);
        setTimeout(() => resolve(null), timeoutMs);
      });
      channel.send(packet);
      const at = await answered;
      pendingPings.delete(seq);
      rtts.push(at === null ? null : at - sentAt);
    }
    return { rttsMs: rtts };
  },

  async bulkSend({ mbps, seconds }) {
    const perSecond = (mbps * 1e6) / 8 / DATAGRAM_SIZE;
    const total = Math.max(1, Math.floor(perSecond * seconds));
    const packet = prefixed(BULK, DATAGRAM_SIZE);
    const view = new DataView(packet.buffer);
    const started = performance.now();
    const stopAt = started + (seconds + 1) * 1000;
    let sent = 0;
    while (sent < total && performance.now() < stopAt && channel.readyState === "open") {
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * perSecond) + 1);
      while (sent < due && channel.bufferedAmount < BULK_BUFFER_MAX) {
        view.setUint32(3, sent);
        channel.send(packet);
        sent += 1;
      }
      await sleep(2);
    }
    // the channel is reliable: the window ends when what was queued has left
    while (channel.bufferedAmount > 0 && performance.now() < stopAt) await sleep(5);
    return { packets: sent, bytes: sent * DATAGRAM_SIZE, duration_s: (performance.now() - started) / 1000 };
  },

  bulkStats() {
    return {
      bytes: bulk.bytes,
      packets: bulk.packets,
      quietMs: bulk.last === null ? null : performance.now() - bulk.last,
    };
  },

  close() {
    if (pc) pc.close();
    return {};
  },
};

async function run(command) {
  try {
    const op = ops[command.op];
    if (!op) throw new Error(`unknown op ${command.op}`);
    const result = await op(command.args ?? {});
    await post("reply", { id: command.id, ok: true, result: result ?? null });
  } catch (e) {
    await post("reply", { id: command.id, ok: false, error: String(e && e.message ? e.message : e) })
      .catch(() => {});
  }
}

async function main() {
  document.getElementById("state").textContent = "natlab browser agent: running";
  let failures = 0;
  while (failures < MAX_POLL_FAILURES) {
    let command;
    try {
      command = await post("poll", {});
      failures = 0;
    } catch (e) {
      failures += 1;
      await sleep(200);
      continue;
    }
    if (!command || !command.op || command.op === "none") continue;
    if (command.op === "quit") break;
    run(command); // not awaited: commands may overlap (a ping echo while bulk data flows)
  }
  document.getElementById("state").textContent = "natlab browser agent: stopped";
}

main();
