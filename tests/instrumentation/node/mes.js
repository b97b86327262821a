// The MES of tests/instrumentation.rs: amqplib, pg and express, instrumented by
// @opentelemetry/auto-instrumentations-node (see otel.js). It makes no span of its own: it only
// sets the attributes a developer would (order.id, order.status, enduser.id) on the active span.
//
// - consumes orders.accepted: production starts (in_production, saved with pg), ends, and CRM
//   is told over HTTP (POST {CRM_URL}/orders/{id}/status {"status": "manufactured"});
// - POST /orders/:id/handover {"user"}: the order goes to the courier (handed_to_courier).
//
// Environment: MES_PORT, AMQP_URL, PG_URL, CRM_URL.
'use strict';
const amqp = require('amqplib');
const express = require('express');
const { Pool } = require('pg');
const { trace } = require('@opentelemetry/api');

const QUEUE = 'orders.accepted';

function tag(orderId, user, status) {
  const span = trace.getActiveSpan();
  span.setAttribute('order.id', orderId);
  span.setAttribute('enduser.id', user);
  if (status) span.setAttribute('order.status', status);
}

// As a service does at start: the database or the broker may not take connections yet (the
// broker opens its port a moment before it serves it), so a refused connection is tried again
// for up to 30 s.
async function retried(what, attempt) {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (e) {
      if (tries >= 150 || e.code !== 'ECONNREFUSED') throw e;
      console.error(`${what}: ${e.message}; trying again`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

async function main() {
  const db = new Pool({ connectionString: process.env.PG_URL, max: 2 });
  await retried('postgres', () => db.query(
    'CREATE TABLE IF NOT EXISTS production (order_id TEXT PRIMARY KEY, user_id TEXT, status TEXT)'));

  const bus = await retried('rabbitmq', () => amqp.connect(process.env.AMQP_URL));
  const channel = await bus.createChannel();
  await channel.assertQueue(QUEUE, { durable: true });
  await channel.consume(QUEUE, async (msg) => {
    const { order_id: orderId, user } = JSON.parse(msg.content.toString());
    try {
      tag(orderId, user, 'in_production');
      await db.query(
        "INSERT INTO production (order_id, user_id, status) VALUES ($1, $2, 'in_production')",
        [orderId, user]);
      await db.query("UPDATE production SET status = 'manufactured' WHERE order_id = $1", [orderId]);
      const reply = await fetch(`${process.env.CRM_URL}/orders/${orderId}/status`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ status: 'manufactured', user }),
      });
      if (reply.status !== 204) throw new Error(`CRM answered ${reply.status}`);
      channel.ack(msg);
    } catch (error) {
      console.error(`order ${orderId}: ${error}`);
      channel.nack(msg, false, false);
    }
  });

  const app = express();
  app.use(express.json());
  app.post('/orders/:id/handover', async (req, res) => {
    tag(req.params.id, req.body.user, 'handed_to_courier');
    const result = await db.query(
      "UPDATE production SET status = 'handed_to_courier' WHERE order_id = $1", [req.params.id]);
    if (result.rowCount !== 1) {
      res.status(404).json({ error: `order ${req.params.id} is not in production` });
      return;
    }
    res.json({ order_id: req.params.id, status: 'handed_to_courier' });
  });
  const server = app.listen(Number(process.env.MES_PORT), '127.0.0.1', () => {
    console.error(`mes-api listening on ${server.address().port}`);
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
