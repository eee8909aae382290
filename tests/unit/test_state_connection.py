"""The store's script calls: NOSCRIPT loads and retries only what did not run; a cluster in motion is retryable."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.exceptions import ClusterDownError, ConnectionError, NoScriptError, ResponseError

from worker.config import StateSettings
from worker.policy.facts import FactKey, FactKind
from worker.state.addressing import FactAddressing
from worker.state.connection import Script, is_cluster_transient, on_raw_socket, run_pipelined
from worker.state.errors import StateUnavailable
from worker.state.redis_store import RedisStateStore

FACT = FactKey("org", FactKind.EMAIL_OPT_OUT_ORGANIZATION, ("a@example.com",))


class ScriptedPipeline:
    def __init__(self, owner: ScriptedClient) -> None:
        self._owner = owner
        self._queued: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> None:
        self._queued.append(args)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        assert raise_on_error is False
        self._owner.sent.append(list(self._queued))
        return [self._owner.answer(args) for args in self._queued]


class ScriptedClient:
    """Answers each EVALSHA with the next of ``answers`` (an exception instance or a reply)."""

    def __init__(self, answers: list[Any]) -> None:
        self._answers = list(answers)
        self.sent: list[list[tuple[Any, ...]]] = []
        self.loaded: list[str] = []

    def pipeline(self, transaction: bool = False) -> ScriptedPipeline:
        return ScriptedPipeline(self)

    def answer(self, args: tuple[Any, ...]) -> Any:
        return self._answers.pop(0)

    def script_load(self, source: str) -> str:
        self.loaded.append(source)
        return "sha"


def test_calls_answered_noscript_are_sent_again_once_loaded_and_the_others_are_not():
    script = Script("return 1")
    client = ScriptedClient([1, NoScriptError("NOSCRIPT No matching script"), 3, 2])
    calls = [(script, ["k1"], []), (script, ["k2"], []), (script, ["k3"], [])]
    assert run_pipelined(client, calls) == [1, 2, 3]  # type: ignore[arg-type]
    assert client.loaded == ["return 1"]
    assert [len(sent) for sent in client.sent] == [3, 1]
    assert client.sent[1][0][3] == "k2"


@pytest.mark.parametrize(
    "reply",
    [
        ResponseError("MOVED 3999 127.0.0.1:7001"),
        ResponseError("ASK 3999 127.0.0.1:7002"),
        ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        ConnectionError("Connection refused"),
    ],
)
def test_a_cluster_in_motion_or_a_node_down_fails_the_whole_read_as_retryable(reply):
    """The read script's path (a cluster's read): any such reply fails the batch, to be retried."""
    client = ScriptedClient([reply])
    addressing = FactAddressing(StateSettings(shards=1))
    store = RedisStateStore(client=client, addressing=addressing)  # type: ignore[arg-type]
    groups = addressing.group({FACT: None})
    with pytest.raises(StateUnavailable):
        store.read_scripted(list(groups), [b"".join(wanted) for _, wanted in groups.values()], 1)


def test_only_redirections_and_cluster_states_count_as_transient():
    assert is_cluster_transient(ResponseError("MOVED 1 h:1")) and is_cluster_transient(ResponseError("TRYAGAIN x"))
    assert not is_cluster_transient(ResponseError("GENERATION none")) and not is_cluster_transient(ValueError("MOVED"))


def test_a_store_without_a_client_or_connector_is_refused():
    with pytest.raises(ValueError, match="client or a connector"):
        RedisStateStore(addressing=FactAddressing(StateSettings()))


def test_the_cores_own_read_is_not_tried_on_a_tls_connection():
    """Bytes on a TLS socket are not the protocol's: the store takes the read script instead (None here)."""
    client = redis.Redis(host="127.0.0.1", port=1, ssl=True)  # never connected: nothing may be sent
    asked: list[int] = []
    assert on_raw_socket(client, lambda fd, timeout: asked.append(fd)) is None
    assert asked == []
