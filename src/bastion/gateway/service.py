"""The gateway: routes a chat request to its model, moderates input and output by policy, records usage.

    prepare()      model, policy, limits, input moderation (and redaction)      → Turn
    complete()     the upstream call, output moderation, the completion (a dict in OpenAI's shape)
    open_stream()  the upstream stream, windowed output moderation, server-sent events

A blocked input never reaches the upstream: the answer is the policy's refusal with
`finish_reason: "content_filter"`. A blocked output is replaced the same way and never sent. Every
completion carries the Bastion extension `bastion_moderation: {policy, input, output}` naming the categories.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bastion.auth.keys import Principal
from bastion.core.errors import BastionError, ConfigError, InvalidRequest
from bastion.core.records import Message
from bastion.core.settings import Settings
from bastion.db.session import Database
from bastion.gateway.batching import ModerationBatcher
from bastion.gateway.limits import RateLimiter
from bastion.gateway.policy import StageVerdict, evaluate, redact
from bastion.gateway.schemas import ChatCompletionRequest
from bastion.gateway.settings import GatewayPolicy, GatewaySettings, RateLimit, StageRules
from bastion.gateway.streaming import Blocked, OutputWindow
from bastion.gateway.usage import ConversationSink, DiscardConversations, Exchange, UsageRecord, UsageRecorder
from bastion.llm.base import ChatBackend, ChatChoice, ChatDelta, ChatRequest
from bastion.llm.router import ChatModels
from bastion.llm.settings import LLMSettings
from bastion.moderation.service import ModerationService


@dataclass
class Turn:
    """One request on its way through the gateway."""

    id: str
    created: int
    started: float
    model: str
    backend: ChatBackend
    policy_name: str
    policy: GatewayPolicy
    limit: RateLimit
    principal: Principal
    request: ChatRequest
    include_usage: bool
    openai_moderation: bool
    record: UsageRecord
    store: bool = True
    input: StageVerdict = field(default_factory=StageVerdict)
    output: StageVerdict | None = None


class Gateway:
    """Moderated chat completions in front of the configured chat models."""

    def __init__(
        self,
        settings: Settings,
        moderation: ModerationService,
        db: Database | None = None,
        *,
        gateway: GatewaySettings | None = None,
        llm: LLMSettings | None = None,
        sink: ConversationSink | None = None,
    ) -> None:
        self.settings = settings
        self.config = gateway or settings.gateway
        self.models = ChatModels(llm or settings.llm, settings)
        self.moderation = moderation
        self.limiter = RateLimiter()
        self.usage = UsageRecorder(db, self.config.record_usage)
        self.sink: ConversationSink = sink or DiscardConversations()
        self._moderator = ModerationBatcher(moderation)
        for name, policy in self.config.policies.items():
            wanted = policy.moderation_model
            if wanted is not None and moderation.settings.moderation.resolve(wanted) is None:
                raise ConfigError(
                    f"gateway policy {name!r} uses moderation model {wanted!r}, which is not configured; "
                    f"configured: {sorted(moderation.settings.moderation.models)}"
                )

    # -- moderation -----------------------------------------------------------------------------------

    def _moderate(self, turn: Turn, texts: list[str], rules: StageRules) -> StageVerdict:
        """`texts` judged by `rules` of the turn's policy; the time taken is added to the turn's record."""
        if not rules.enabled or not any(t.strip() for t in texts):
            return StageVerdict(spans=[[] for _ in texts])
        started = time.perf_counter()
        name, results = self._moderator.moderate(
            texts, turn.policy.moderation_model, rules.wants_spans, rules.threshold_set
        )
        verdict = evaluate(results, rules, name)
        turn.record.moderation_ms += (time.perf_counter() - started) * 1000
        return verdict

    def _input_texts(self, messages: list[Message], scope: str) -> list[int]:
        """Indices of the messages to moderate: the last turn (after the last assistant message) or all."""
        start = 0
        if scope == "last_turn":
            for i in range(len(messages) - 1, -1, -1):
                if messages[i].role == "assistant":
                    start = i + 1
                    break
        return [
            i for i in range(start, len(messages)) if messages[i].role != "assistant" and messages[i].content
        ]

    # -- preparing a turn -----------------------------------------------------------------------------

    def prepare(self, body: ChatCompletionRequest, principal: Principal) -> Turn:
        """Resolve model and policy, admit the request, moderate (and maybe redact) its input."""
        started = time.perf_counter()
        policy_name = self.config.policy_for(principal.key_id, str(principal.role))
        policy = self.config.policies[policy_name]
        limit = self.config.limits.for_key(principal.key_id)
        record = UsageRecord(
            id="chatcmpl-" + secrets.token_hex(12),
            key_id=principal.key_id,
            user=body.user,
            model=body.model,
            backend="",
            policy=policy_name,
            stream=body.stream,
        )
        try:
            self.limiter.admit(principal.key_id, limit)
            model = self.models.resolve(body.model)
            record.model = model
            if len(body.messages) > self.config.limits.max_messages:
                most = self.config.limits.max_messages
                raise InvalidRequest(
                    f"'messages' has {len(body.messages)} items; the limit is {most}.",
                    param="messages",
                )
            messages = [m.to_message(i) for i, m in enumerate(body.messages)]
            backend = self.models.backend(model)
            record.backend = backend.plugin_name
            if body.tools and not backend.supports_tools:
                raise InvalidRequest(
                    f"model {model!r} does not support tools; use a model served by an `openai` backend.",
                    param="tools",
                )
            request = ChatRequest(
                messages=messages,
                model=model,
                temperature=body.temperature,
                top_p=body.top_p,
                max_tokens=body.max_completion_tokens or body.max_tokens,
                stop=body.stop_list(),
                n=body.n,
                seed=body.seed,
                user=body.user,
                tools=body.tools,
                tool_choice=body.tool_choice,
                extra=body.extras(),
                timeout=self.config.limits.upstream_timeout_s,
            )
            turn = Turn(
                id=record.id,
                created=int(time.time()),
                started=started,
                model=model,
                backend=backend,
                policy_name=policy_name,
                policy=policy,
                limit=limit,
                principal=principal,
                request=request,
                include_usage=bool(body.stream_options and body.stream_options.include_usage),
                openai_moderation=bool((body.model_extra or {}).get("moderation")),
                record=record,
                store=body.store,
            )
            indices = self._input_texts(messages, policy.input_scope)
            texts = [messages[i].content or "" for i in indices]
            turn.input = self._moderate(turn, texts, policy.input)
            if turn.input.action == "redact":
                for i, spans in zip(indices, turn.input.spans, strict=True):
                    if spans:
                        original = messages[i]
                        messages[i] = original.model_copy(
                            update={"content": redact(original.content or "", spans)}
                        )
            return turn
        except BastionError as exc:
            self._record_error(record, started, exc)
            raise

    # -- finishing ------------------------------------------------------------------------------------

    def _record_error(self, record: UsageRecord, started: float, exc: BastionError) -> None:
        record.status = "error"
        record.http_status = exc.status_code
        record.error_code = exc.code
        record.latency_ms = (time.perf_counter() - started) * 1000
        self.usage.record(record)

    def _finish(self, turn: Turn, answers: list[str | None], usage: tuple[int, int], status: str) -> None:
        record = turn.record
        record.latency_ms = (time.perf_counter() - turn.started) * 1000
        record.prompt_tokens, record.completion_tokens = usage
        record.status = status
        record.input_categories = dict(turn.input.categories)
        record.input_scores = dict(turn.input.scores)
        record.action = turn.input.action
        if turn.output is not None:
            record.output_categories = dict(turn.output.categories)
            record.output_scores = dict(turn.output.scores)
            record.action = max(
                (turn.input.action, turn.output.action),
                key=lambda a: ("allow", "flag", "redact", "block").index(a),
            )
        self.limiter.add_tokens(turn.principal.key_id, turn.limit, sum(usage))
        self.usage.record(record)
        self.sink.record(
            Exchange(
                request_id=turn.id,
                key_id=turn.principal.key_id,
                user=turn.request.user,
                model=turn.model,
                policy=turn.policy_name,
                messages=turn.request.messages,
                answers=answers,
                input=turn.input.summary(),
                output=turn.output.summary() if turn.output is not None else None,
                store=turn.store,
            )
        )

    def _extension(self, turn: Turn, output: StageVerdict | None) -> dict[str, Any]:
        """`bastion_moderation` always; OpenAI's own `moderation` field when the request asked for it."""
        fields: dict[str, Any] = {
            "bastion_moderation": {
                "policy": turn.policy_name,
                "input": turn.input.summary(),
                "output": output.summary() if output is not None else None,
            }
        }
        if turn.openai_moderation:
            not_run = {
                "type": "error",
                "code": "not_run",
                "message": "the input was blocked; nothing was generated",
            }
            fields["moderation"] = {
                "input": turn.input.openai_shape(),
                "output": output.openai_shape() if output is not None else not_run,
            }
        return fields

    @staticmethod
    def server_timing(turn: Turn) -> str:
        """A `Server-Timing` header value: milliseconds in moderation, in the upstream call (once it has
        returned) and in the gateway since the turn was prepared, so far."""
        record = turn.record
        stages = "input and output" if turn.output is not None else "input"
        parts = [f'moderation;dur={record.moderation_ms:.2f};desc="{stages}"']
        if record.upstream_ms is not None:
            parts.append(f"upstream;dur={record.upstream_ms:.2f}")
        parts.append(f"total;dur={(time.perf_counter() - turn.started) * 1000:.2f}")
        return ", ".join(parts)

    # -- whole completions ----------------------------------------------------------------------------

    def complete(self, turn: Turn) -> dict[str, Any]:
        """The completion for a prepared turn, in OpenAI's shape plus `moderation`."""
        request = turn.request
        if turn.input.blocked:
            refusal = turn.policy.refusal
            choices = [ChatChoice(refusal, "content_filter", index=i) for i in range(request.n)]
            self._finish(turn, [None] * request.n, (0, 0), "blocked_input")
            return self._completion(turn, choices, (0, 0), None)
        upstream_started = time.perf_counter()
        try:
            result = turn.backend.generate(request)
        except BastionError as exc:
            self._record_error(turn.record, turn.started, exc)
            raise
        turn.record.upstream_ms = (time.perf_counter() - upstream_started) * 1000
        output = StageVerdict()
        choices = []
        for choice in result.choices:
            verdict = self._moderate_choice(turn, choice)
            output.merge(verdict)
            if verdict.blocked:
                choice = ChatChoice(turn.policy.refusal, "content_filter", index=choice.index)
            elif verdict.action == "redact" and verdict.spans and verdict.spans[0]:
                choice = ChatChoice(
                    redact(choice.content or "", verdict.spans[0]),
                    choice.finish_reason,
                    choice.tool_calls,
                    choice.index,
                )
            choices.append(choice)
        turn.output = output
        usage = (result.prompt_tokens, result.completion_tokens)
        status = "blocked_output" if output.blocked else "ok"
        answers = [c.content if c.finish_reason != "content_filter" else None for c in choices]
        self._finish(turn, answers, usage, status)
        return self._completion(turn, choices, usage, output)

    def _moderate_choice(self, turn: Turn, choice: ChatChoice) -> StageVerdict:
        rules = turn.policy.output
        verdict = self._moderate(turn, [choice.content or ""], rules)
        arguments = [
            json.dumps(call.get("function", call), ensure_ascii=False) for call in choice.tool_calls or []
        ]
        if arguments:
            tools = self._moderate(turn, arguments, rules)
            if tools.action == "redact":  # arguments cannot be redacted safely: refuse instead
                tools.action = "block"
                tools.categories = {k: "block" if a == "redact" else a for k, a in tools.categories.items()}
            tools.spans = []
            verdict.merge(tools)
        return verdict

    def _completion(
        self, turn: Turn, choices: list[ChatChoice], usage: tuple[int, int], output: StageVerdict | None
    ) -> dict[str, Any]:
        out_choices = []
        for choice in choices:
            message: dict[str, Any] = {"role": "assistant", "content": choice.content, "refusal": None}
            if choice.finish_reason == "content_filter":
                message["refusal"] = choice.content
            elif choice.tool_calls:
                message["tool_calls"] = choice.tool_calls
            out_choices.append(
                {
                    "index": choice.index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": choice.finish_reason,
                }
            )
        return {
            "id": turn.id,
            "object": "chat.completion",
            "created": turn.created,
            "model": turn.model,
            "system_fingerprint": None,
            "choices": out_choices,
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
            **self._extension(turn, output),
        }

    # -- streams --------------------------------------------------------------------------------------

    def open_stream(self, turn: Turn) -> Iterator[str]:
        """Server-sent events for a prepared turn. The upstream is asked (and its first delta awaited)
        before this returns, so that upstream failures still answer as JSON errors."""
        if turn.input.blocked:
            return self._refusal_stream(turn)
        upstream_started = time.perf_counter()
        upstream = turn.backend.stream(turn.request)
        try:
            first = next(upstream, None)
        except BastionError as exc:
            self._record_error(turn.record, turn.started, exc)
            raise
        return self._relay(turn, upstream, first, upstream_started)

    def _chunk(self, turn: Turn, choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": turn.id,
            "object": "chat.completion.chunk",
            "created": turn.created,
            "model": turn.model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
        return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"

    @staticmethod
    def _delta(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    def _usage_chunk(self, turn: Turn, usage: tuple[int, int]) -> str:
        counts = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
        return self._chunk(turn, [], usage=counts)

    def _refusal_stream(self, turn: Turn) -> Iterator[str]:
        n = turn.request.n
        try:
            yield self._chunk(turn, [self._delta(i, {"role": "assistant", "content": ""}) for i in range(n)])
            for i in range(n):
                yield self._chunk(turn, [self._delta(i, {"content": turn.policy.refusal})])
                yield self._chunk(
                    turn,
                    [self._delta(i, {}, "content_filter")],
                    **self._extension(turn, None),
                )
            if turn.include_usage:
                yield self._usage_chunk(turn, (0, 0))
            yield "data: [DONE]\n\n"
        finally:
            self._finish(turn, [None] * n, (0, 0), "blocked_input")

    def _relay(
        self, turn: Turn, upstream: Iterator[ChatDelta], first: ChatDelta | None, upstream_started: float
    ) -> Iterator[str]:
        policy = turn.policy
        n = turn.request.n

        def check(text: str) -> StageVerdict:
            return self._moderate(turn, [text], policy.output)

        windows = {i: OutputWindow(self.config.streaming, check) for i in range(n)}
        tool_deltas: dict[int, list[dict[str, Any]]] = {i: [] for i in range(n)}
        answers: dict[int, str | None] = {i: "" for i in range(n)}
        finished: set[int] = set()
        usage: tuple[int, int] | None = None
        output = StageVerdict()
        turn.output = output
        status = "ok"

        def cut(index: int, blocked: Blocked) -> Iterator[str]:
            nonlocal status
            status = "blocked_output"
            answers[index] = None
            finished.add(index)
            if windows[index].released == 0:
                yield self._chunk(turn, [self._delta(index, {"content": policy.refusal})])
            yield self._chunk(
                turn,
                [self._delta(index, {}, "content_filter")],
                **self._extension(turn, windows[index].verdict),
            )

        try:
            yield self._chunk(turn, [self._delta(i, {"role": "assistant", "content": ""}) for i in range(n)])
            deltas = itertools.chain([first] if first is not None else [], upstream)
            for delta in deltas:
                if delta.usage is not None:
                    usage = delta.usage
                    continue
                index = delta.index
                if index in finished or index not in windows:
                    continue
                try:
                    if delta.tool_calls:
                        tool_deltas[index].extend(delta.tool_calls)
                    if delta.content:
                        released = windows[index].feed(delta.content)
                        if released:
                            answers[index] = (answers[index] or "") + released
                            yield self._chunk(turn, [self._delta(index, {"content": released})])
                    if delta.finish_reason:
                        yield from self._close_choice(
                            turn, index, windows, tool_deltas, answers, delta.finish_reason
                        )
                        finished.add(index)
                except Blocked as blocked:
                    yield from cut(index, blocked)
                if len(finished) == n and status == "blocked_output":
                    break  # nothing more will be sent: stop the upstream early
            for index in range(n):
                if index not in finished:
                    try:
                        yield from self._close_choice(turn, index, windows, tool_deltas, answers, "stop")
                    except Blocked as blocked:
                        yield from cut(index, blocked)
                    finished.add(index)
            turn.record.upstream_ms = (time.perf_counter() - upstream_started) * 1000
            if usage is None:  # not reported (or stopped early): estimate ~4 characters per token
                held = sum(w.released + len(w.pending) for w in windows.values())
                usage = (0, held // 4)
            if turn.include_usage:
                yield self._usage_chunk(turn, usage)
            yield "data: [DONE]\n\n"
        except BastionError as exc:
            status = "error"
            turn.record.http_status = exc.status_code
            turn.record.error_code = exc.code
            yield "data: " + json.dumps(exc.envelope()) + "\n\n"
        finally:
            close = getattr(upstream, "close", None)
            if close is not None:
                close()
            for window in windows.values():
                output.merge(window.verdict)
            self._finish(turn, [answers[i] for i in range(n)], usage or (0, 0), status)

    def _close_choice(
        self,
        turn: Turn,
        index: int,
        windows: dict[int, OutputWindow],
        tool_deltas: dict[int, list[dict[str, Any]]],
        answers: dict[int, str | None],
        finish_reason: str,
    ) -> Iterator[str]:
        released = windows[index].finish()
        if released:
            answers[index] = (answers[index] or "") + released
            yield self._chunk(turn, [self._delta(index, {"content": released})])
        if tool_deltas[index]:
            arguments = self._tool_arguments(tool_deltas[index])
            verdict = self._moderate(turn, arguments, turn.policy.output)
            if verdict.action == "redact":
                verdict.action = "block"
            windows[index].verdict.merge(verdict)
            if verdict.blocked:
                raise Blocked(verdict)
            for piece in tool_deltas[index]:
                yield self._chunk(turn, [self._delta(index, {"tool_calls": [piece]})])
        yield self._chunk(
            turn,
            [self._delta(index, {}, finish_reason)],
            **self._extension(turn, windows[index].verdict),
        )

    @staticmethod
    def _tool_arguments(pieces: list[dict[str, Any]]) -> list[str]:
        calls: dict[int, str] = {}
        for piece in pieces:
            function = piece.get("function") or {}
            text = (function.get("name") or "") + " " + (function.get("arguments") or "")
            position = int(piece.get("index", 0))
            calls[position] = calls.get(position, "") + text
        return list(calls.values())

    def close(self) -> None:
        """Stop the usage writer and close every loaded chat backend."""
        self.usage.close()
        self.models.close()
        self._moderator.close()
