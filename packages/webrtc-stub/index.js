// webtorrent → @thaunknown/simple-peer imports these three names from webrtc-polyfill. Nodes never
// open WebRTC connections (webtorrent's WebRTC support is off when RTCPeerConnection is missing),
// so they are undefined here. See README.md for why this package exists.
export const RTCPeerConnection = undefined;
export const RTCSessionDescription = undefined;
export const RTCIceCandidate = undefined;
