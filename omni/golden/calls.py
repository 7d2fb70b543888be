"""Read the exact calls recorded in cases.json (`... .call` strings) without evaluating code.

A golden folder records calls such as
`sys=model.get_sys_prompt(ref_audio=ref_voice_16k, mode='voice_cloning', language='en'); model.chat(msgs=[...], max_new_tokens=12, ...)`.
We parse them with `ast` and resolve names against the folder's inputs (image*.png, frame*.png,
*_16k arrays), so another folder with other prompts, images and lengths replays unchanged.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from ..processing.prompt import sys_prompt


@dataclass
class Call:
    func: str  # "chat", "streaming_generate", ...
    kwargs: dict[str, Any]


def resolver(folder: Path, inputs: dict) -> Callable[[str], Any]:
    def resolve(name: str):
        if name in inputs:
            return inputs[name].numpy()
        png = folder / f"{name}.png"
        if png.is_file():
            return Image.open(png).convert("RGB")
        raise KeyError(f"call names {name!r}, which is neither an input array nor {png.name}")

    return resolve


def parse_calls(src: str, resolve: Callable[[str], Any]) -> list[Call]:
    """All `model.X(...)` calls in `src`, with names bound by earlier assignments resolved."""
    env: dict[str, Any] = {}
    calls = []
    for stmt in ast.parse(src).body:
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.Expr)) else None
        if not isinstance(value, ast.Call):
            raise ValueError(f"unsupported statement in recorded call: {ast.dump(stmt)[:80]}")
        call = _call(value, env, resolve)
        if isinstance(stmt, ast.Assign):
            target = stmt.targets[0]
            if not isinstance(target, ast.Name):
                raise ValueError(f"unsupported assignment in recorded call: {ast.dump(stmt)[:80]}")
            env[target.id] = _run_helper(call)
        else:
            calls.append(call)
    return calls


def _run_helper(call: Call):
    if call.func == "get_sys_prompt":
        return sys_prompt(call.kwargs.get("mode", "default"), call.kwargs.get("ref_audio"))
    raise ValueError(f"unsupported helper call model.{call.func}")


def _call(node: ast.Call, env, resolve) -> Call:
    if isinstance(node.func, ast.Attribute):
        func = node.func.attr
    elif isinstance(node.func, ast.Name):
        func = node.func.id
    else:
        raise ValueError(f"unsupported callee in recorded call: {ast.dump(node.func)[:80]}")
    kwargs: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError("unsupported **kwargs in recorded call")
        kwargs[kw.arg] = _value(kw.value, env, resolve)
    if node.args:
        kwargs["_args"] = [_value(a, env, resolve) for a in node.args]
    return Call(func, kwargs)


def _value(node, env, resolve):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id] if node.id in env else resolve(node.id)
    if isinstance(node, ast.List):
        return [_value(e, env, resolve) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(e, env, resolve) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_value(k, env, resolve): _value(v, env, resolve) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand, env, resolve)
    raise ValueError(f"unsupported expression in recorded call: {ast.dump(node)[:80]}")


def sampling_from(kwargs: dict):
    """SamplingParams for the recorded `sampling=/do_sample=/repetition_penalty=` arguments."""
    from ..sampling import SamplingParams

    do_sample = bool(kwargs.get("sampling", True)) and bool(kwargs.get("do_sample", True))
    return SamplingParams(
        do_sample=do_sample,
        temperature=kwargs.get("temperature", 0.7),
        top_p=kwargs.get("top_p", 0.8),
        top_k=kwargs.get("top_k", 100),
        repetition_penalty=kwargs.get("repetition_penalty", 1.05),
    )
