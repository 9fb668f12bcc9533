"""gunicorn for one pool of a node, @portal or @verifier (systemd/mss-totp@.service;
`gunicorn -c deploy/gunicorn.conf.py portal.wsgi`).

Sized for the verifier: a login costs one Argon2id hash (15-35 ms of one core, memory-hard),
everything else a few milliseconds, so processes, not threads, and about two per core by
default, per pool: set GUNICORN_WORKERS in each pool's pool-*.env for the node's share.
"""

import multiprocessing
import os
import shutil
from pathlib import Path

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2))
threads = 1  # Argon2id holds a core; threads would only queue behind it
worker_class = "sync"
timeout = 30  # a request stuck longer than this is killed, and nginx answers 502
graceful_timeout = 20
# No keepalive: sync workers answer "Connection: close" and serve one connection at a time
# (nginx opens one per request; on loopback that costs little, and the benchmark counts it).
max_requests = 20000  # recycled now and then: memory stays flat even if a library leaks
max_requests_jitter = 2000
accesslog = None  # nginx logs the requests; the portal logs what it decided
errorlog = "-"
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
preload_app = False  # each worker opens its own database connection and keyring

# Prometheus: each worker writes its counters in this folder, emptied at each start, and a
# scrape of /internal/metrics adds them up (enrolment/indicators.py).
metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def on_starting(server):
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)


def child_exit(server, worker):
    if metrics_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
