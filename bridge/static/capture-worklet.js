// The microphone's samples, block by block, from the audio thread to the page (space.js),
// which encodes them to Opus. A file of its own: the page's Content-Security-Policy runs
// only the bridge's own scripts.
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) this.port.postMessage(ch.slice(0));
    return true;
  }
}
registerProcessor("chorus-capture", Capture);
