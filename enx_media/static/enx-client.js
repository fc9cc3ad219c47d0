// enx-media browser client: join a room with a token, publish camera/microphone, receive the others.
// Same protocol as enx_media.client (Python): api/signaling.schema.json.
// Two peer connections, like the node's two transports: one sendonly to publish, one that answers
// the node's offers to receive. The node is ICE-lite and announces its own candidate: no STUN server.
"use strict";

// Three layers at a quarter, half and full size of the capture; bitrates as browsers use for 720p.
const SIMULCAST_LAYERS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1500000 },
];

class EnxRoom extends EventTarget {
  constructor(wsUrl, token) {
    super();
    this.wsUrl = wsUrl;
    this.token = token;
    this.nextId = 1;
    this.pending = new Map();
    this.joined = null;
    this.publishPc = null;
    this.screenPc = null;            // a screen share's publish transport (shareScreen)
    this.subscribePc = null;
    this.midToStream = new Map();
    this.streams = new Map();        // stream_id -> {participant_id, kind, ...}
    this.participants = new Map();   // participant_id -> {name, role, ...}
    this.remoteTracks = new Map();   // stream_id -> MediaStreamTrack
    this.adapted = new Map();        // stream_id -> its adaptVideo report (sends the element's height again)
    this.offerChain = Promise.resolve();
    this.simulcast = true;           // publish camera video as SIMULCAST_LAYERS
    this.mediaAddress = null;        // "host:port": send media there, not to the node's candidate (a relay, a NAT)
  }

  remoteSdp(sdp) {
    // The node's SDP with its host candidates pointed at mediaAddress, if one is set.
    if (!this.mediaAddress) return sdp;
    const [host, port] = this.mediaAddress.split(":");
    return sdp.split("\r\n").map((line) => {
      if (!line.startsWith("a=candidate:")) return line;
      const f = line.split(" ");
      if (f.length > 5) { f[4] = host; f[5] = port; }
      return f.join(" ");
    }).join("\r\n");
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  connect() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(this.wsUrl);
      this.ws.onopen = () => resolve();
      this.ws.onerror = (e) => reject(new Error("signaling connection failed"));
      this.ws.onclose = (e) => {
        for (const [, p] of this.pending) p.reject(new Error("signaling closed"));
        this.pending.clear();
        this.emit("closed", { code: e.code, reason: e.reason });
      };
      this.ws.onmessage = (e) => this.onMessage(JSON.parse(e.data));
    });
  }

  request(type, fields = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ type, id, ...fields }));
    });
  }

  onMessage(msg) {
    if (msg.id !== undefined && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.type === "error") p.reject(Object.assign(new Error(msg.desc), { code: msg.code, reason: msg.error }));
      else p.resolve(msg);
      return;
    }
    switch (msg.type) {
      case "offer": this.offerChain = this.offerChain.then(() => this.onOffer(msg)).catch((e) => this.emit("error", e)); break;
      case "stream-added": this.streams.set(msg.stream.stream_id, msg.stream); break;
      case "stream-removed": this.streams.delete(msg.stream_id); this.remoteTracks.delete(msg.stream_id); break;
      case "stream-switched": this.streamSwitched(msg); break;
      case "participant-joined": this.participants.set(msg.participant.participant_id, msg.participant); break;
      case "participant-left": this.participants.delete(msg.participant_id); break;
      case "layers": this.setLayers(msg).catch((e) => this.emit("error", e)); break;
    }
    this.emit(msg.type, msg);
    this.emit("message", msg);
  }

  async join() {
    await this.connect();
    this.joined = await this.request("join", { token: this.token });
    for (const p of this.joined.participants) this.participants.set(p.participant_id, p);
    for (const s of this.joined.streams) this.streams.set(s.stream_id, s);
    return this.joined;
  }

  adaptVideo(streamId, element) {
    // Adaptive stream: tell the node the height this video is rendered at (device pixels) whenever its
    // element resizes, so it sends the simulcast layer that fits; a hidden (0-height) element keeps the last.
    // It follows the m-line: after a stream-switched, the new stream gets the height.
    let sent = null, timer = null, current = streamId;
    const report = (again) => {
      const h = Math.round(element.clientHeight * (window.devicePixelRatio || 1));
      if (!h || (h === sent && !again)) return;
      sent = h;
      this.streamSettings(current, h).catch((e) => this.emit("error", e));
    };
    const entry = { report, moveTo: (id) => { current = id; report(true); } };
    this.adapted.set(streamId, entry);
    const observer = new ResizeObserver(() => { clearTimeout(timer); timer = setTimeout(report, 200); });
    observer.observe(element);
    return () => { observer.disconnect(); clearTimeout(timer); this.adapted.delete(current); };
  }

  streamSwitched(msg) {
    // The same m-line (and track) carries another stream from now on (a lecture moving between a
    // publisher's stream and the MCU's composite): no new track, the picture goes on.
    const id = msg.stream.stream_id;
    this.midToStream.set(msg.mid, id);
    this.streams.set(id, msg.stream);
    if (this.remoteTracks.has(msg.from)) { this.remoteTracks.set(id, this.remoteTracks.get(msg.from)); this.remoteTracks.delete(msg.from); }
    const adapted = this.adapted.get(msg.from);
    if (adapted) { this.adapted.delete(msg.from); this.adapted.set(id, adapted); adapted.moveTo(id); }
  }

  async setLayers(msg) {
    // Dynacast: the node says which simulcast layers of a published track someone receives; the others
    // stop being encoded and sent until it asks for them again.
    const tr = this.publishPc && this.publishPc.getTransceivers().find((t) => t.mid === msg.mid);
    if (!tr) return;
    const params = tr.sender.getParameters();
    if (!params.encodings || params.encodings.length !== msg.active.length) return;
    params.encodings.forEach((e, i) => { e.active = msg.active[i]; });
    await tr.sender.setParameters(params);
  }

  async streamSettings(streamId, maxHeight, maxFps) {
    // How this client renders a received video: at most maxHeight lines (undefined: the best there is)
    // and maxFps frames a second (null: every frame; undefined: as last set, so adaptVideo's size
    // reports keep it). The node sends the simulcast layer and VP8 temporal layers that fit.
    if (!this.streamFps) this.streamFps = new Map();
    if (maxFps !== undefined) this.streamFps.set(streamId, maxFps);
    const fps = this.streamFps.get(streamId);
    const msg = { stream_id: streamId };
    if (maxHeight) msg.max_height = maxHeight;
    if (fps) msg.max_fps = fps;
    const reply = await this.request("stream-settings", msg);
    return reply.encoding;
  }

  async publish(mediaStream, source = "camera") {
    const pc = new RTCPeerConnection({ iceServers: [] });
    for (const track of mediaStream.getTracks()) {
      const init = { direction: "sendonly", streams: [mediaStream] };
      // Camera video goes as three simulcast layers, lowest first (the node sends each subscriber the one
      // that fits the size it renders). Chromium sends all three only from 720p capture. A screen share
      // goes as one full-size layer: text scaled down is unreadable.
      if (track.kind === "video" && this.simulcast && source === "camera") init.sendEncodings = SIMULCAST_LAYERS;
      pc.addTransceiver(track, init);
    }
    await pc.setLocalDescription(await pc.createOffer());
    const reply = await this.request("publish", source === "camera" ? { sdp: pc.localDescription.sdp }
      : { sdp: pc.localDescription.sdp, source });
    await pc.setRemoteDescription({ type: "answer", sdp: this.remoteSdp(reply.sdp) });
    if (source === "camera") this.publishPc = pc; else this.screenPc = pc;
    return pc;
  }

  async shareScreen() {
    // A screen (getDisplayMedia) on a publish transport of its own, announced as source "screen"; it ends
    // when the user stops sharing.
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const pc = await this.publish(display, "screen");
    display.getVideoTracks()[0].addEventListener("ended", () => { pc.close(); if (this.screenPc === pc) this.screenPc = null; });
    return display;
  }

  async unpublish() {
    await this.request("unpublish");
    if (this.publishPc) { this.publishPc.close(); this.publishPc = null; }
  }

  async subscribe() {
    if (!this.subscribePc) {
      const pc = new RTCPeerConnection({ iceServers: [] });
      pc.ontrack = (e) => {
        const streamId = this.midToStream.get(e.transceiver.mid);
        if (!streamId) return;
        this.remoteTracks.set(streamId, e.track);
        this.emit("track", { stream: this.streams.get(streamId) || { stream_id: streamId }, track: e.track });
      };
      this.subscribePc = pc;
    }
    return this.request("subscribe");
  }

  async onOffer(msg) {
    for (const s of msg.streams) { this.midToStream.set(s.mid, s.stream_id); this.streams.set(s.stream_id, s); }
    const pc = this.subscribePc;
    await pc.setRemoteDescription({ type: "offer", sdp: this.remoteSdp(msg.sdp) });
    await pc.setLocalDescription(await pc.createAnswer());
    await this.request("answer", { sdp: pc.localDescription.sdp });
  }

  chat(text, to) { return this.request("chat", to ? { text, to } : { text }); }
  requestFloor() { return this.request("floor-request"); }

  async framesDecoded() {
    if (!this.subscribePc) return 0;
    let frames = 0;
    (await this.subscribePc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
    });
    return frames;
  }

  async outgoingBitrate() {
    // The publisher's bandwidth estimate: rises only when the node feeds back what it received.
    if (!this.publishPc) return 0;
    let bps = 0;
    (await this.publishPc.getStats()).forEach((r) => {
      if (r.type === "candidate-pair" && r.nominated && r.availableOutgoingBitrate) bps = r.availableOutgoingBitrate;
    });
    return bps;
  }

  async leave() {
    try { await this.request("leave"); } catch (e) { /* already closed */ }
    for (const pc of [this.publishPc, this.screenPc, this.subscribePc]) if (pc) pc.close();
    this.ws.close();
  }
}

window.EnxRoom = EnxRoom;
