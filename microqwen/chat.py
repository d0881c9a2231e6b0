"""The chat format: a conversation written as one prompt, the way Qwen2.5 was trained to read it.

A chat model still only continues text. Qwen2.5-Instruct learned conversations written in
ChatML: each message sits between `<|im_start|>{role}` and `<|im_end|>`, and the prompt ends with
an open assistant turn (the generation prompt) for the model to write in. The model ends its
reply with `<|im_end|>`, its end-of-sequence token.

    >>> print(render([{"role": "user", "content": "What is the capital of France?"}]), end="")
    <|im_start|>system
    You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>
    <|im_start|>user
    What is the capital of France?<|im_end|>
    <|im_start|>assistant

That prompt is 36 tokens (docs/reference/qwen2.5-0.5b.md). `<|im_start|>` and `<|im_end|>` are single tokens,
so no user text can forge them: `Tokenizer.encode(text, allow_special=False)` reads them as text.

Hugging Face renders the Jinja `chat_template` of tokenizer_config.json; here the same template
is plain Python, checked against transformers' rendering of the real Qwen2.5 template:

- if the first message is not a system message, a default one comes first: "You are Qwen, created
  by Alibaba Cloud. You are a helpful assistant." for Instruct, "You are a helpful assistant."
  for the base model. The wording is read from the model's template (`default_system_prompt`);
- a system message that is not the first is an ordinary turn;
- with `tools` (JSON schemas of functions), the system message gains a `# Tools` section listing
  them; an assistant message with `tool_calls` writes each call as `<tool_call>` JSON; and
  consecutive `tool` messages (the results) go into one user turn as `<tool_response>` blocks.
"""

from __future__ import annotations

import json
import re
from typing import Mapping, Sequence

from .errors import FormatError, UsageError

INSTRUCT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
"""The default system prompt of Qwen2.5-Instruct, used when a model directory has no chat template."""

ROLES = ("system", "user", "assistant", "tool")

TOOLS_INTRODUCTION = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_INSTRUCTIONS = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)

QWEN25_TEMPLATE = (
    '{%- if tools %}\n'
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    '    {%- else %}\n'
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    '    {%- endif %}\n'
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user'
    ' query.\\n\\nYou are provided with function signatures within <tools></tools> XML'
    ' tags:\\n<tools>" }}\n'
    '    {%- for tool in tools %}\n'
    '        {{- "\\n" }}\n'
    '        {{- tool | tojson }}\n'
    '    {%- endfor %}\n'
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name'
    ' and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\":'
    ' <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    '{%- else %}\n'
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    '    {%- else %}\n'
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a"
    " helpful assistant.<|im_end|>\\n' }}\n"
    '    {%- endif %}\n'
    '{%- endif %}\n'
    '{%- for message in messages %}\n'
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or'
    ' (message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    '        {%- if message.content %}\n'
    "            {{- '\\n' + message.content }}\n"
    '        {%- endif %}\n'
    '        {%- for tool_call in message.tool_calls %}\n'
    '            {%- if tool_call.function is defined %}\n'
    '                {%- set tool_call = tool_call.function %}\n'
    '            {%- endif %}\n'
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
    '            {{- tool_call.name }}\n'
    '            {{- \'", "arguments": \' }}\n'
    '            {{- tool_call.arguments | tojson }}\n'
    "            {{- '}\\n</tool_call>' }}\n"
    '        {%- endfor %}\n'
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    '        {%- endif %}\n'
    "        {{- '\\n<tool_response>\\n' }}\n"
    '        {{- message.content }}\n'
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    '        {%- endif %}\n'
    '    {%- endif %}\n'
    '{%- endfor %}\n'
    '{%- if add_generation_prompt %}\n'
    "    {{- '<|im_start|>assistant\\n' }}\n"
    '{%- endif %}\n'
)
"""The chat_template of Qwen2.5-0.5B-Instruct's tokenizer_config.json (Jinja), verbatim: what `render` implements."""

# In the Jinja text the default system block reads '<|im_start|>system\nYou are ...<|im_end|>\n',
# with the \n written as a backslash and an n inside the Jinja string.
_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system(?:\\n|\n)([^'\"{}]+?)<\|im_end\|>")


def default_system_prompt(chat_template: str | None) -> str | None:
    """The system prompt a template writes when the conversation has none.

    No template at all gives the Instruct wording; a template without a default gives None.

    Examples:
        >>> default_system_prompt("{{- '<|im_start|>system\\\\nYou are a helpful assistant.<|im_end|>\\\\n' }}")
        'You are a helpful assistant.'
    """
    if chat_template is None:
        return INSTRUCT_SYSTEM_PROMPT
    match = _DEFAULT_SYSTEM.search(chat_template)
    return match.group(1) if match else None


def check_template(chat_template: str, source: str) -> None:
    """Refuse a Jinja chat template that is not Qwen2.5's: `render` implements that one only.

    Qwen2.5's template is accepted with any default system prompt (the base models' reads "You
    are a helpful assistant."), as that prompt is read from the template.

    Examples:
        >>> check_template(QWEN25_TEMPLATE.replace(INSTRUCT_SYSTEM_PROMPT, "You are a helpful assistant."), "x")
        >>> check_template("{{ messages[0]['content'] }}", "model.gguf: tokenizer.chat_template")
        Traceback (most recent call last):
          ...
        microqwen.errors.FormatError: model.gguf: tokenizer.chat_template is not Qwen2.5's chat template ...
    """
    system = default_system_prompt(chat_template)
    if system is None or chat_template != QWEN25_TEMPLATE.replace(INSTRUCT_SYSTEM_PROMPT, system):
        raise FormatError(
            f"{source} is not Qwen2.5's chat template (ChatML with tools, as in Qwen2.5-Instruct's "
            f"tokenizer_config.json), the only one microqwen renders; it begins {chat_template[:60]!r}"
        )


def render(
    messages: Sequence[Mapping[str, object]],
    add_generation_prompt: bool = True,
    tools: Sequence[object] | None = None,
    default_system: str | None = INSTRUCT_SYSTEM_PROMPT,
) -> str:
    """The prompt text of a conversation: messages are {"role": ..., "content": ...} dicts.

    `tools` are the function definitions the model may call (JSON-serialisable dicts);
    `add_generation_prompt` ends the prompt with the open assistant turn.
    """
    _check_messages(messages)
    first_system = _content(messages[0]) if messages[0]["role"] == "system" else None
    parts = [_system_block(first_system, default_system, tools)]
    for index, message in enumerate(messages):
        if index == 0 and first_system is not None:
            continue
        parts.append(_turn(messages, index))
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _system_block(system: str | None, default_system: str | None, tools: Sequence[object] | None) -> str:
    """The opening system turn: the given or default system prompt, and the tools if any."""
    text = system if system is not None else default_system
    if tools is not None and (isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence)):
        raise UsageError(f"tools must be a list of function definitions, not a {type(tools).__name__}")
    if tools:
        listing = "".join("\n" + _to_json(tool, f"tools[{i}]") for i, tool in enumerate(tools))
        return f"<|im_start|>system\n{text or ''}{TOOLS_INTRODUCTION}{listing}{TOOLS_INSTRUCTIONS}<|im_end|>\n"
    return f"<|im_start|>system\n{text}<|im_end|>\n" if text is not None else ""


def _turn(messages: Sequence[Mapping[str, object]], index: int) -> str:
    message = messages[index]
    role = message["role"]
    calls = message.get("tool_calls")
    if role == "assistant" and isinstance(calls, list) and calls:
        content = message.get("content")
        head = "<|im_start|>assistant" + (f"\n{content}" if content else "")
        body = "".join(_tool_call(call, f"messages[{index}].tool_calls[{i}]") for i, call in enumerate(calls))
        return head + body + "<|im_end|>\n"
    if role == "tool":
        opens = index == 0 or messages[index - 1]["role"] != "tool"
        closes = index == len(messages) - 1 or messages[index + 1]["role"] != "tool"
        body = f"\n<tool_response>\n{_content(message)}\n</tool_response>"
        return ("<|im_start|>user" if opens else "") + body + ("<|im_end|>\n" if closes else "")
    return f"<|im_start|>{role}\n{_content(message)}<|im_end|>\n"


def _tool_call(call: object, where: str) -> str:
    """One call: {"function": {"name": ..., "arguments": {...}}}, or the inner dict alone."""
    if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
        call = call["function"]
    if not isinstance(call, Mapping) or not isinstance(call.get("name"), str) or "arguments" not in call:
        raise UsageError(f"{where}: a tool call needs a \"name\" string and \"arguments\"")
    arguments = _to_json(call["arguments"], f"{where}.arguments")
    return f'\n<tool_call>\n{{"name": "{call["name"]}", "arguments": {arguments}}}\n</tool_call>'


def _to_json(value: object, where: str) -> str:
    """JSON as the template's `tojson` filter writes it in transformers: json.dumps, non-ASCII kept."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as e:  # not JSON; a cycle; nested past the stack
        raise UsageError(f"{where}: cannot be written as JSON: {e}") from None


def _content(message: Mapping[str, object]) -> str:
    content = message["content"]
    assert isinstance(content, str)  # checked by _check_messages
    return content


def _check_messages(messages: Sequence[Mapping[str, object]]) -> None:
    """Each message is a mapping with a known role and string content (optional with tool_calls)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise UsageError("messages must be a non-empty list of {\"role\": ..., \"content\": ...} dicts")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise UsageError(f"{where} is a {type(message).__name__}, not a {{\"role\", \"content\"}} dict")
        if message.get("role") not in ROLES:
            raise UsageError(f"{where}: role {message.get('role')!r} is not one of {', '.join(ROLES)}")
        calls = message.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise UsageError(f"{where}: tool_calls must be a list")
        content_optional = message["role"] == "assistant" and bool(calls)
        content = message.get("content")
        if not isinstance(content, str) and not (content_optional and content is None):
            raise UsageError(f"{where}: content must be a string, got {type(content).__name__}")
