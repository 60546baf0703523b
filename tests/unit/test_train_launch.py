"""The stage's signal handling while its workers train (the end-to-end stop and resume is in test_train.py)."""

from __future__ import annotations

import os
import signal

from framework.train_launch import stop_requests


def test_usr1_and_term_ask_for_a_stop_instead_of_killing(tmp_path):
    stop = tmp_path / "STOP"
    before = signal.getsignal(signal.SIGTERM)
    with stop_requests(stop) as received:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.exists()
    assert received == ["SIGUSR1", "SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored once the workers are done
