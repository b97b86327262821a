"""The Shop API of tests/instrumentation.rs: a small Flask service run under
`opentelemetry-instrument` (flask, requests, pika and sqlite3 instrumentations).

It makes no span of its own: it only sets the attributes a developer would set on the current
span (order.id, order.status, enduser.id, constructor.file_id).

  POST /constructor/files  {"user"}             saves a constructor file before any order exists
  POST /orders             {"user", "file_id"}  creates an order (id made here), saves it, publishes
                                                it on the queue orders.created
  POST /orders/<id>/courier {"user"}            asks MES (HTTP) to hand the order to the courier

Environment: SHOP_PORT, SHOP_DB (an SQLite file), AMQP_URL, MES_URL.
"""

import json
import os
import signal
import sqlite3
import sys
import uuid

import pika
import requests
from flask import Flask, jsonify, request
from opentelemetry import trace
from werkzeug.serving import make_server

DB = os.environ["SHOP_DB"]
AMQP_URL = os.environ["AMQP_URL"]
MES_URL = os.environ["MES_URL"]
QUEUE = "orders.created"

app = Flask(__name__)


def execute(sql, params=()):
    """One statement in its own connection (the sqlite3 instrumentation traces cursor.execute)."""
    conn = sqlite3.connect(DB)
    try:
        cur = conn.cursor()
        cur.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def publish(queue, body):
    """A connection per message: pika's BlockingConnection is not shared between threads."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = conn.channel()
        channel.queue_declare(queue=queue, durable=True)
        channel.basic_publish(exchange="", routing_key=queue, body=json.dumps(body).encode())
    finally:
        conn.close()


@app.post("/constructor/files")
def save_constructor_file():
    user = request.get_json()["user"]
    file_id = "F-" + uuid.uuid4().hex[:8]
    span = trace.get_current_span()
    span.set_attribute("constructor.file_id", file_id)
    span.set_attribute("enduser.id", user)
    execute("INSERT INTO constructor_files (id, user_id) VALUES (?, ?)", (file_id, user))
    return jsonify({"file_id": file_id}), 201


@app.post("/orders")
def create_order():
    payload = request.get_json()
    user = payload["user"]
    order_id = "S-" + uuid.uuid4().hex[:8]
    span = trace.get_current_span()
    span.set_attribute("order.id", order_id)
    span.set_attribute("order.status", "new")
    span.set_attribute("enduser.id", user)
    if payload.get("file_id"):
        span.set_attribute("constructor.file_id", payload["file_id"])
    execute(
        "INSERT INTO orders (id, user_id, file_id, status) VALUES (?, ?, ?, 'new')",
        (order_id, user, payload.get("file_id")),
    )
    publish(QUEUE, {"order_id": order_id, "user": user})
    return jsonify({"order_id": order_id, "status": "new"}), 201


@app.post("/orders/<order_id>/courier")
def hand_to_courier(order_id):
    user = request.get_json()["user"]
    span = trace.get_current_span()
    span.set_attribute("order.id", order_id)
    span.set_attribute("enduser.id", user)
    reply = requests.post(f"{MES_URL}/orders/{order_id}/handover", json={"user": user}, timeout=10)
    reply.raise_for_status()
    return jsonify(reply.json()), 200


def main():
    execute(
        "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, user_id TEXT, file_id TEXT, status TEXT)"
    )
    execute("CREATE TABLE IF NOT EXISTS constructor_files (id TEXT PRIMARY KEY, user_id TEXT)")
    server = make_server("127.0.0.1", int(os.environ["SHOP_PORT"]), app, threaded=True)
    # SIGTERM exits through atexit, where the SDK flushes its span processors.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"shop-api listening on {server.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
