// uWebSockets.js peer for scripts/bench.sh: the SocketAPI protocol subset that switchboard-bench
// uses, on uWS's native pub/sub (`app.publish`, which frames once and corks per socket).
//
//   /      subscribe/unsubscribe `chat` and `notifications` (keyed: topic `notifications/USER_ID`),
//          actions send_message, send_notification, add — the JSON shapes of PROTOCOL.md
//          (replies echo `id` as Switchboard does).
//   /echo  echoes every message.
//
//   node server.js [PORT]   (listens on 127.0.0.1)
'use strict';
const uWS = require('uWebSockets.js');

const port = parseInt(process.argv[2] || '9200', 10);
const decoder = new TextDecoder();

function reply(ws, obj, req) {
  if (req.id !== undefined) obj.id = req.id;
  ws.send(JSON.stringify(obj), false);
}

function topicOf(req) {
  if (req.channel === 'chat') return 'chat';
  if (req.channel === 'notifications' && req.data && req.data.user_id !== undefined) {
    return 'notifications/' + req.data.user_id;
  }
  return null;
}

// UWS_COMPRESSION=shared: permessage-deflate with uWS's shared compressor on `/*` (publications
// compressed once, `app.publish(..., compress = true)`), as `scripts/bench.sh deflate` runs it.
const SHARED = process.env.UWS_COMPRESSION === 'shared';

const app = uWS.App();

app.ws('/echo', {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024 * 1024,
  maxBackpressure: 64 * 1024 * 1024,
  idleTimeout: 120,
  message: (ws, message, isBinary) => {
    ws.send(message, isBinary);
  },
});

app.ws('/*', {
  compression: SHARED ? uWS.SHARED_COMPRESSOR : uWS.DISABLED,
  maxPayloadLength: 1024 * 1024,
  maxBackpressure: 4 * 1024 * 1024, // Switchboard's default
  closeOnBackpressureLimit: true,
  idleTimeout: 120,
  message: (ws, message, isBinary) => {
    let req;
    try {
      req = JSON.parse(decoder.decode(message));
    } catch (e) {
      ws.send('{"type":"error","message":"Invalid message: expected a JSON object."}', false);
      return;
    }
    const channel = req.channel;
    switch (req.type) {
      case 'subscribe': {
        const topic = topicOf(req);
        if (topic === null) {
          reply(ws, { type: 'error', channel, message: `Channel '${channel}' not found.` }, req);
          return;
        }
        ws.subscribe(topic);
        reply(ws, { type: 'subscribed', channel }, req);
        return;
      }
      case 'unsubscribe': {
        const topic = topicOf(req);
        if (topic !== null) ws.unsubscribe(topic);
        reply(ws, { type: 'unsubscribed', channel }, req);
        return;
      }
      case 'action': {
        const data = req.data || {};
        if (channel === 'send_message') {
          app.publish('chat', JSON.stringify({ type: 'data', channel: 'chat', data: { message: data.text } }), false, SHARED);
          reply(ws, { type: 'action', channel, status: 'completed' }, req);
        } else if (channel === 'send_notification') {
          const uid = data.user_id;
          app.publish(
            'notifications/' + uid,
            JSON.stringify({ type: 'data', channel: 'notifications', data: { user_id: uid, type: 'alert', notifications: [] } }),
            false,
          );
          reply(ws, { type: 'action', channel, status: 'completed' }, req);
        } else if (channel === 'add') {
          reply(ws, { type: 'action', channel, status: 'completed', data: data.a + data.b }, req);
        } else {
          reply(ws, { type: 'error', channel, message: `Action '${channel}' not found.` }, req);
        }
        return;
      }
      default:
        reply(ws, { type: 'error', message: 'Unknown message type.' }, req);
    }
  },
});

app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`uws: cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.log(`uws listening on ws://127.0.0.1:${port}/ (echo at /echo) pid ${process.pid}`);
});
