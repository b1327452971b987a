"""Our adapters as the ``model`` of real smolagents agents (full loop: tool call -> observation -> answer)."""

from __future__ import annotations

from typing import Any

import pytest

from modelfactory import CallableModel, ChatMessage, TokenUsage, ToolCall, ToolCallFunction

smolagents = pytest.importorskip("smolagents")


def test_tool_calling_agent_full_loop() -> None:
    seen: list[list[dict[str, Any]]] = []

    def scripted(messages: list[dict[str, Any]], tools_to_call_from: Any = None) -> ChatMessage:
        seen.append(messages)
        assert tools_to_call_from, "the agent's tools must reach the model as schemas"
        names = {t["function"]["name"] for t in tools_to_call_from}
        assert {"add", "final_answer"} <= names
        if len(seen) == 1:
            call = ToolCall(id="call_1", function=ToolCallFunction(name="add", arguments={"a": 2, "b": 3}))
        else:
            observation = next(m["content"] for m in reversed(messages) if "Observation" in str(m["content"]))
            assert "5" in observation
            call = ToolCall(
                id="call_2", function=ToolCallFunction(name="final_answer", arguments={"answer": "5"})
            )
        return ChatMessage(content=None, tool_calls=[call], token_usage=TokenUsage(11, 3))

    @smolagents.tool
    def add(a: int, b: int) -> int:
        """Adds two integers.

        Args:
            a: first number
            b: second number
        """
        return a + b

    agent = smolagents.ToolCallingAgent(
        tools=[add], model=CallableModel(fn=scripted), max_steps=3, verbosity_level=0
    )
    assert str(agent.run("What is 2+3?")) == "5"
    assert len(seen) == 2
    # Role conversion reached the model: no smolagents-only roles on the wire.
    assert {m["role"] for m in seen[1]} <= {"system", "user", "assistant"}
    usage = agent.monitor.get_total_token_counts()
    assert usage.input_tokens == 22 and usage.output_tokens == 6


def test_code_agent_full_loop_with_stop_sequences() -> None:
    calls: list[list[str] | None] = []

    def scripted(messages: list[dict[str, Any]], stop_sequences: list[str] | None = None) -> str:
        calls.append(stop_sequences)
        if len(calls) == 1:
            return "Thought: compute.\n<code>\nprint(6 * 7)\n</code>\nObservation: I made this up"
        return "Thought: done.\n<code>\nfinal_answer(42)\n</code>"

    agent = smolagents.CodeAgent(tools=[], model=CallableModel(fn=scripted), max_steps=3, verbosity_level=0)
    assert agent.run("What is 6*7?") == 42
    assert calls[0] and "Observation:" in calls[0]
    step = agent.memory.steps[1]
    # The stop contract cut the invented observation before the agent saw it.
    assert "I made this up" not in (step.model_output or "")
    assert "42" in str(step.observations)
