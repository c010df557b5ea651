"""`bastion chat`: talk to a model through a running gateway, and see when and why a turn was blocked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console

from bastion.core.cli_support import fail, print_json

console = Console(highlight=False)


class _Session:
    """An HTTP session with the gateway; errors become one line and exit status 1."""

    def __init__(self, base_url: str, key: str | None, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def _check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        hint = " (set --key or BASTION_KEY)" if response.status_code == 401 else ""
        fail(f"HTTP {response.status_code}: {message}{hint}")

    def _unreachable(self, exc: httpx.HTTPError) -> NoReturn:
        fail(f"cannot reach Bastion at {self.base_url} ({type(exc).__name__}); start it with `bastion serve`")

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self.client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            self._unreachable(exc)
        self._check(response)
        result: dict[str, Any] = response.json()
        return result

    def stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        try:
            with self.client.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        fail(f"the stream failed: {event['error'].get('message')}")
                    yield event
        except httpx.HTTPError as exc:
            self._unreachable(exc)


def _verdict_line(extension: dict[str, Any] | None) -> str | None:
    """'blocked (input: illicit/violent)' or None when nothing was flagged."""
    if not extension:
        return None
    parts = []
    for side in ("input", "output"):
        verdict = extension.get(side)
        if verdict and verdict.get("categories"):
            actions = ", ".join(f"{c} → {a}" for c, a in verdict["actions"].items())
            parts.append(f"{side}: {actions}")
    return "; ".join(parts) or None


def chat(
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Send one message, print the answer, exit.")
    ] = None,
    model: Annotated[str, typer.Option(help="Chat model (GET /v1/models lists them).")] = "default",
    base_url: Annotated[
        str, typer.Option("--url", envvar="BASTION_URL", help="The Bastion server.")
    ] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None,
        typer.Option(envvar="BASTION_KEY", help="API key (or set BASTION_KEY).", show_default=False),
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt for the conversation.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per answer.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 120.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="With --message: print the answer and verdicts as JSON.")
    ] = False,
) -> None:
    """Chat with a model through the safety gateway; blocked turns say which categories and why."""
    if json_output and message is None:
        fail("--json needs --message (one-shot mode)")
    session = _Session(base_url, key, timeout)
    history: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    params: dict[str, Any] = {"model": model}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if temperature is not None:
        params["temperature"] = temperature

    if message is not None and json_output:
        result = session.complete({**params, "messages": [*history, {"role": "user", "content": message}]})
        choice = result["choices"][0]
        print_json(
            {
                "model": result["model"],
                "content": choice["message"]["content"],
                "finish_reason": choice["finish_reason"],
                "blocked": choice["finish_reason"] == "content_filter",
                "moderation": result.get("bastion_moderation"),
                "usage": result.get("usage"),
            }
        )
        return

    def turn(text: str) -> None:
        history.append({"role": "user", "content": text})
        answer = ""
        finish = None
        extension = None
        console.print(f"[bold green]{model}›[/bold green] ", end="")
        for event in session.stream({**params, "messages": history}):
            for choice in event.get("choices") or []:
                piece = choice.get("delta", {}).get("content") or ""
                if piece:
                    answer += piece
                    console.print(piece, end="", markup=False, soft_wrap=True)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                    extension = event.get("bastion_moderation")
        console.print()
        history.append({"role": "assistant", "content": answer})
        why = _verdict_line(extension)
        if finish == "content_filter":
            console.print(f"[bold red]✖ blocked[/bold red] [red]({why or 'by policy'})[/red]")
        elif why:
            console.print(f"[yellow]⚑ flagged ({why})[/yellow]")

    if message is not None:
        turn(message)
        return
    console.print(f"[dim]Chatting with {model} through {session.base_url}. Ctrl-D or /quit to leave.[/dim]")
    while True:
        try:
            text = console.input("[bold cyan]you›[/bold cyan] ")
        except EOFError:
            console.print()
            return
        if text.strip() in ("/quit", "/exit"):
            return
        if text.strip():
            turn(text)
