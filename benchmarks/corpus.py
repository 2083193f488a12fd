"""The benchmarks' corpora: natural text found on the machine, and the old synthetic one.

Every benchmark that measures text (prep, tokenizer, dedup) draws its data from here, so
a figure is always taken on the same kind of text. The **real** corpora are built from
text that any Debian/Ubuntu machine with Python carries, read offline:

- Python's standard library, parsed with ``ast``: docstrings (prose with identifiers)
  and the source of functions (code);
- man pages (``/usr/share/man``, roff markup stripped), English and, where installed,
  the translated pages (``de``, ``fr``, ``ru``, ``ja``, ``zh_CN`` ...);
- ``/usr/share/doc``: READMEs, changelogs, plain-text and Markdown documentation
  (licence files are skipped: thousands of copies of the same GPL text are not a
  natural vocabulary).

That gives a long-tailed natural vocabulary (identifiers, flags, names, several scripts)
where the synthetic corpus's ~200 words made every word a cache hit. Everything is
deterministic for a given machine and seed: files are listed in sorted order, shuffled by
the seed, and read until the pool holds enough text; passages are then taken from that
pool in order (wrapping around only once it is exhausted), so a 100k-row corpus repeats
little text. ``pool_digest`` names the exact pool, so two machines can tell whether
they measured the same text.

The **synthetic** corpora (Zipf or short word lists) stay as a second row: they are
what the older figures were taken on.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import inspect
import math
import random
import re
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAN_ROOT = Path("/usr/share/man")
DOC_ROOT = Path("/usr/share/doc")
LANGS = ("de", "fr", "es", "it", "pt_BR", "ru", "pl", "nl", "ja", "zh_CN", "ko", "uk", "cs")
GENERATOR_VERSION = 2  # bump when the output for a given seed changes

# ----------------------------------------------------------------------------- sources


@dataclass
class Doc:
    """One source document cut into passages (paragraphs, docstrings, function bodies)."""

    kind: str  # "python" | "man" | "man-intl" | "doc"
    title: str  # module.function, command name, package/file
    passages: list[str]
    code: list[str] = field(default_factory=list)  # python: function sources
    lang: str = "en"


_ROFF_ESC = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d+"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),  # string registers
    (re.compile(r"\\\((em|en)"), "-"),
    (re.compile(r"\\\((aq|cq)"), "'"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\((bu)"), "*"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),  # other named glyphs
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\[&/,|^:%]"), ""),
    (re.compile(r"\\ "), " "),
]
_SKIP = {"TH", "Dd", "Dt", "Os", "so", "ds", "de", "nr", "if", "ie", "el", "ta", "in", "ti"}
_BREAKS = {"PP", "LP", "P", "TP", "IP", "SH", "SS", "sp", "br", "Pp", "Sh", "Ss", "It", "Bl"}


def _roff_text(src: str) -> tuple[str, list[str]]:
    """Plain paragraphs of a man page (good enough for natural text, not a renderer);
    returns (the NAME line, paragraphs)."""
    paras: list[str] = []
    cur: list[str] = []
    name = ""
    in_name = False

    def flush() -> None:
        if cur:
            text = " ".join(cur).strip()
            if len(text) > 20:
                paras.append(text)
            cur.clear()

    for line in src.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\"')) or line in (".", "'"):
            continue
        if line.startswith((".", "'")):
            parts = line[1:].split(None, 1)
            if not parts:
                continue
            mac, arg = parts[0], (parts[1] if len(parts) > 1 else "")
            if mac in _BREAKS:
                flush()
                in_name = mac in ("SH", "Sh") and arg.strip('"').upper() in ("NAME", "NOM")
                if mac in ("IP", "SS", "Ss", "It") and arg:
                    cur.append(arg.replace('"', ""))
                continue
            if mac not in _SKIP and len(mac) <= 2 and mac[:1].isalpha() and arg:
                cur.append(arg.replace('"', ""))
            continue
        for pat, rep in _ROFF_ESC:
            line = pat.sub(rep, line)
        if in_name and not name:
            name = line.strip()
        cur.append(line.strip())
    flush()
    return name, paras


def _man_docs(root: Path, kind: str, lang: str) -> Iterator[tuple[Path, str, str]]:
    for sect in sorted(root.glob("man[1-8]")):
        for p in sorted(sect.glob("*.gz")):
            yield p, kind, lang


def _python_doc(path: Path) -> Doc | None:
    try:
        src = path.read_text(encoding="utf-8")
        tree = ast.parse(src)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    mod = path.stem
    lines = src.splitlines(keepends=True)  # once: ast.get_source_segment splits per call
    passages, code = [], []
    if (d := ast.get_docstring(tree)) and len(d) > 40:
        passages.append(f"{mod}\x00{inspect.cleandoc(d)}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        doc = ast.get_docstring(node)
        if doc and len(doc) > 40:
            passages.append(f"{mod}.{node.name}\x00{inspect.cleandoc(doc)}")
        if isinstance(node, ast.FunctionDef) and node.end_lineno:
            seg = "".join(lines[node.lineno - 1 : node.end_lineno])
            if 80 < len(seg) < 20_000:
                code.append(inspect.cleandoc(seg))
    if not passages and not code:
        return None
    return Doc("python", mod, passages, code)


def _doc_file(path: Path) -> Doc | None:
    name = path.name.lower()
    if "copyright" in name or "license" in name or "licence" in name:
        return None
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return None
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    paras = [p for p in paras if len(p) > 30]
    if not paras:
        return None
    return Doc("doc", f"{path.parent.name}/{path.name}", paras)


def _man_doc(path: Path, kind: str, lang: str) -> Doc | None:
    try:
        src = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if src.startswith(".so "):  # a link to another page
        return None
    name, paras = _roff_text(src)
    if not paras:
        return None
    cmd = path.name.split(".")[0]
    return Doc(kind, name or cmd, paras, lang=lang)


def _sources() -> list[tuple[str, Path, str, str]]:
    """Every candidate file as (weight class, path, kind, lang), in sorted order."""
    out: list[tuple[str, Path, str, str]] = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(stdlib.rglob("*.py")):
        if "site-packages" not in p.parts and "test" not in p.parts:
            out.append(("python", p, "python", "en"))
    if MAN_ROOT.is_dir():
        out += [("man", p, k, lang) for p, k, lang in _man_docs(MAN_ROOT, "man", "en")]
        for lang in LANGS:
            if (MAN_ROOT / lang).is_dir():
                out += [
                    ("intl", p, k, lang)
                    for p, k, lang in _man_docs(MAN_ROOT / lang, "man-intl", lang)
                ]
    if DOC_ROOT.is_dir():
        for p in sorted(DOC_ROOT.rglob("*")):
            if p.is_file() and p.suffix in (".gz", ".txt", ".md", ".rst", "") and p.stat().st_size:
                out.append(("doc", p, "doc", "en"))
    return out


# Share of the pool's bytes per source: prose-heavy chat data with code and some other
# languages, roughly what public instruction sets look like.
SHARES = {"python": 0.35, "man": 0.35, "doc": 0.18, "intl": 0.12}


@dataclass
class Pool:
    docs: list[Doc]
    digest: str  # blake2b of every passage, in order: names the exact text measured

    def describe(self) -> str:
        by: dict[str, int] = {}
        for d in self.docs:
            by[d.kind] = by.get(d.kind, 0) + sum(len(p) for p in d.passages + d.code)
        parts = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(by.items()))
        return f"{len(self.docs):,} documents ({parts}; pool {self.digest[:12]})"


def _fill(
    queue: list[tuple[Path, str, str]], budget: float, docs: list[Doc], seen: set[bytes]
) -> float:
    """Read documents off the front of ``queue`` into ``docs`` until ``budget`` bytes;
    returns the bytes still missing when the queue ran out (0 when filled)."""
    got = 0
    while queue and got < budget:
        p, kind, lang = queue.pop(0)
        if kind == "python":
            d = _python_doc(p)
        elif kind == "doc":
            d = _doc_file(p)
        else:
            d = _man_doc(p, kind, lang)
        if d is None:
            continue
        # Drop passages seen before (boilerplate repeated across files).
        keep = []
        for text in d.passages:
            h = hashlib.blake2b(text.encode(), digest_size=8).digest()
            if h not in seen:
                seen.add(h)
                keep.append(text)
        d.passages = keep
        if not d.passages and not d.code:
            continue
        docs.append(d)
        got += sum(len(x) for x in d.passages + d.code)
    return max(0.0, budget - got)


def text_pool(target_bytes: int, seed: int = 0) -> Pool:
    """Documents from the machine's own text, about ``target_bytes`` in all (split by
    ``SHARES``; a source that runs out leaves its share to the others)."""
    rng = random.Random(seed)
    by_class: dict[str, list[tuple[Path, str, str]]] = {}
    for cls, p, kind, lang in _sources():
        by_class.setdefault(cls, []).append((p, kind, lang))
    docs: list[Doc] = []
    seen: set[bytes] = set()
    queues: dict[str, list[tuple[Path, str, str]]] = {}
    short = 0.0  # bytes the sources that ran out could not supply
    for cls, share in SHARES.items():
        queues[cls] = by_class.get(cls, [])
        rng.shuffle(queues[cls])
        short += _fill(queues[cls], target_bytes * share, docs, seen)
    # A second pass hands the shortfall (Python's stdlib and the translated pages run out
    # first) to whatever still has text, so a large corpus does not repeat itself.
    for cls in SHARES:
        if short <= 0:
            break
        short = _fill(queues[cls], short, docs, seen)
    if not docs:
        sys.exit("corpus: no natural text found (no Python stdlib, man pages or /usr/share/doc)")
    h = hashlib.blake2b(digest_size=16)
    for d in docs:
        for text in d.passages + d.code:
            h.update(text.encode())
    return Pool(docs, h.hexdigest())


# ----------------------------------------------------------------------------- chat rows

SYSTEMS = [
    "You are a helpful assistant.",
    "You are a senior software engineer. Answer with working code and a short explanation.",
    "You are a Unix expert. Explain commands and their options precisely.",
    "You are a concise technical writer.",
    "Tu es un assistant serviable. Réponds dans la langue de la question.",
]
ASK_MAN = {
    "en": ["How do I use {c}?", "What does {c} do?", "Explain the {c} command.", "{c}: options?"],
    "de": ["Wie benutze ich {c}?", "Was macht {c}?"],
    "fr": ["Comment utiliser {c} ?", "Que fait {c} ?"],
    "es": ["¿Cómo uso {c}?", "¿Qué hace {c}?"],
    "it": ["Come si usa {c}?"],
    "pt_BR": ["Como uso o {c}?"],
    "ru": ["Как пользоваться {c}?", "Что делает {c}?"],
    "pl": ["Jak używać {c}?"],
    "nl": ["Hoe gebruik ik {c}?"],
    "ja": ["{c} の使い方を教えてください。"],
    "zh_CN": ["如何使用 {c}？"],
    "ko": ["{c} 사용법을 알려 주세요."],
    "uk": ["Як користуватися {c}?"],
    "cs": ["Jak použít {c}?"],
}


class Cursor:
    """Walks a pool's documents in order, handing out each document's passages (and
    code) in turn, so rows use fresh text until the pool is exhausted (then it starts
    over, counting laps)."""

    def __init__(self, docs: list[Doc]) -> None:
        self.docs = docs
        self.i = self.p = self.c = self.laps = 0

    def doc(self) -> Doc:
        d = self.docs[self.i]
        while self.p >= len(d.passages) and self.c >= len(d.code):
            self.i, self.p, self.c = self.i + 1, 0, 0
            if self.i == len(self.docs):
                self.i, self.laps = 0, self.laps + 1
            d = self.docs[self.i]
        return d

    def take(self, n: int) -> list[str]:
        d = self.docs[self.i]
        out = d.passages[self.p : self.p + n]
        self.p += len(out)
        return out

    def take_code(self, n: int) -> list[str]:
        d = self.docs[self.i]
        out = d.code[self.c : self.c + n]
        self.c += len(out)
        return out


def _n_paragraphs(rng: random.Random, median: float) -> int:
    # lognormal: most replies a few paragraphs, a long tail of long ones
    return max(1, int(rng.lognormvariate(math.log(median), 1.0)))


def _python_turns(rng: random.Random, d: Doc, cur: Cursor) -> list[tuple[str, str]]:
    turns = []
    for p in cur.take(1 + int(rng.random() < 0.3)):
        qual, doc = p.split("\x00", 1)
        first, _, rest = doc.partition("\n")
        r = rng.random()
        if r < 0.4 or not rest.strip():
            q = rng.choice([f"What does `{qual}` do?", f"Explain {qual}.", f"{qual}?"])
            turns.append((q, doc))
        elif r < 0.7 or not d.code:
            turns.append((first, rest.strip()))
        else:
            q = f"Document this function:\n\n```python\n{rng.choice(d.code)}\n```"
            turns.append((q, doc))
    if not turns or rng.random() < 0.5:
        src = "\n\n".join(cur.take_code(_n_paragraphs(rng, 1.0)))
        if src:
            ask = rng.choice(["Show me the implementation.", "Write it in Python.", "Code?"])
            turns.append((ask, f"Here it is:\n\n```python\n{src}\n```"))
    return turns


def _man_turns(rng: random.Random, d: Doc, cur: Cursor) -> list[tuple[str, str]]:
    cmd = d.title.split(" ", 1)[0].strip(",") or d.title
    asks = ASK_MAN.get(d.lang, ASK_MAN["en"])
    turns = [(rng.choice(asks).format(c=cmd), "\n\n".join(cur.take(_n_paragraphs(rng, 3.0))))]
    if rng.random() < 0.25 and (more := cur.take(2)):
        turns.append((f"{more[0][:120]}... what does that mean?", "\n\n".join(more)))
    return turns


def _doc_turns(rng: random.Random, d: Doc, cur: Cursor) -> list[tuple[str, str]]:
    paras = cur.take(_n_paragraphs(rng, 3.0) + 1)
    if len(paras) > 1 and rng.random() < 0.5:
        return [(paras[0] + "\n\nContinue.", "\n\n".join(paras[1:]))]
    ask = rng.choice(["Summarize the next part of {t}.", "What do the docs of {t} say?", "{t}"])
    return [(ask.format(t=d.title), "\n\n".join(paras))]


def chat_row(rng: random.Random, cur: Cursor) -> dict[str, Any]:
    """One conversation: a system prompt now and then, one to three question/answer
    turns about the next passages of the pool."""
    turns: list[tuple[str, str]] = []
    while not turns:
        d = cur.doc()
        if d.kind == "python":
            turns = _python_turns(rng, d, cur)
        elif d.kind == "doc":
            turns = _doc_turns(rng, d, cur)
        else:
            turns = _man_turns(rng, d, cur)
    msgs: list[dict[str, str]] = []
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": rng.choice(SYSTEMS)})
    for q, a in turns[:3]:
        if rng.random() < 0.02:
            a = "  " + a  # replies that start with spaces exist in real data
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": msgs}


def chat_rows(rows: int, seed: int = 0) -> tuple[list[dict[str, Any]], Pool, int]:
    """``rows`` conversations from natural text: (rows, the pool, laps over the pool)."""
    pool = text_pool(max(4_000_000, rows * 1_300), seed)
    rng = random.Random(seed)
    order = list(range(len(pool.docs)))
    rng.shuffle(order)  # interleave sources instead of all Python first
    cur = Cursor([pool.docs[i] for i in order])
    out = [chat_row(rng, cur) for _ in range(rows)]
    return out, pool, cur.laps


def plain_texts(rows: int, seed: int = 0, words: tuple[int, int] = (40, 200)) -> list[str]:
    """``rows`` distinct documents of ``words`` words (uniform), cut from consecutive
    passages of the pool (dedup's base documents: distinct windows of natural text)."""
    pool = text_pool(max(2_000_000, rows * 1_000), seed)
    rng = random.Random(seed)
    stream: list[str] = []
    for d in pool.docs:
        for p in d.passages:
            stream.extend(p.replace("\x00", " ").split())
    out = []
    pos = 0
    for _ in range(rows):
        n = rng.randint(*words)
        if pos + n > len(stream):
            pos = rng.randrange(0, 97)  # another lap, shifted: windows differ from the first
        out.append(" ".join(stream[pos : pos + n]))
        pos += n
    return out


# ----------------------------------------------------------------------------- synthetic

WORDS = (  # noqa: SIM905 - one readable string of vocabulary
    "the of and to in is that for it as with was on be by this are from at or an have not "
    "but they which one you all were her she there would their we him been has when who "
    "will more no if out so said what up its about into than them can only other new some "
    "could time these two may then do first any my now such like our over man me even most "
    "made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still "
    "own see men work long get here between both life being under never day same another "
    "know while last might us great old year off come since against go came right used take "
    "three data model training system memory value error function result number example "
    "question answer customer order service network server request response performance "
    "latency throughput database query index table column schema migration version release "
    "feature bug report"
).split()
IDENTS = "user order item config result value data count total index name path key node cache"
SYN_SYSTEMS = [
    "You are a helpful assistant.",
    "You are a senior software engineer. Answer with working code and a short explanation.",
    "You are a concise support agent. Keep answers under five sentences.",
    "Tu es un assistant serviable. Réponds en français quand on te parle français.",
]


def _sentence(rng: random.Random) -> str:
    n = max(3, int(rng.lognormvariate(2.4, 0.45)))
    words = [rng.choice(WORDS) for _ in range(n)]
    if rng.random() < 0.15:
        words.insert(rng.randrange(n), str(rng.randint(0, 10_000)))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".....?!")


def _paragraph(rng: random.Random, scale: float) -> str:
    n = max(1, int(rng.lognormvariate(1.3, 0.8) * scale))
    return " ".join(_sentence(rng) for _ in range(n))


def _code(rng: random.Random) -> str:
    idents = IDENTS.split()
    lines = []
    for _ in range(max(1, int(rng.lognormvariate(0.8, 0.7)))):
        fn, a, b = rng.choice(idents), rng.choice(idents), rng.choice(idents)
        lines += [
            f"def {fn}_{rng.randint(0, 99)}({a}, {b}={rng.randint(0, 9)}):",
            f'    """{_sentence(rng)}"""',
            f"    if {a} is None:",
            f'        raise ValueError(f"missing {a}: {{{b}!r}}")',
            f"    for i in range(len({a})):",
            f"        {b} += {a}[i] * {rng.randint(2, 64)}",
            f"    return {{'{fn}': {b}, 'n': len({a})}}",
            "",
        ]
    return "```python\n" + "\n".join(lines) + "```"


def synthetic_row(rng: random.Random) -> dict[str, Any]:
    """One conversation over a ~200-word vocabulary (the corpus of the older figures)."""
    msgs: list[dict[str, str]] = []
    if rng.random() < 0.6:
        msgs.append({"role": "system", "content": rng.choice(SYN_SYSTEMS)})
    for _ in range(1 + int(rng.random() < 0.35) + int(rng.random() < 0.15)):
        msgs.append({"role": "user", "content": _paragraph(rng, 0.6)})
        reply = _paragraph(rng, 1.4)
        if rng.random() < 0.3:
            reply = f"{_sentence(rng)}\n\n{_code(rng)}\n\n{_sentence(rng)}"
        if rng.random() < 0.02:
            reply = "  " + reply
        msgs.append({"role": "assistant", "content": reply})
    return {"messages": msgs}


def synthetic_rows(rows: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [synthetic_row(rng) for _ in range(rows)]


def zipf_texts(rows: int, seed: int = 0, words: tuple[int, int] = (40, 200)) -> list[str]:
    """``rows`` documents of Zipf-distributed made-up words ``w0..w29999``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(30_000)]
    probs = 1.0 / np.arange(1, len(vocab) + 1) ** 0.9
    probs /= probs.sum()
    lengths = rng.integers(words[0], words[1], rows)
    texts: list[str] = []
    for lo in range(0, rows, 10_000):  # bounded memory at a million rows
        chunk = lengths[lo : lo + 10_000]
        ids = rng.choice(len(vocab), size=int(chunk.sum()), p=probs).tolist()
        pos = 0
        for n in chunk:
            texts.append(" ".join([vocab[k] for k in ids[pos : pos + n]]))
            pos += n
    return texts


def conversations(kind: str, rows: int, seed: int = 0) -> tuple[list[dict[str, Any]], str]:
    """Chat rows of ``kind`` ("real" or "synthetic") and a line describing them."""
    if kind == "synthetic":
        return synthetic_rows(rows, seed), "synthetic: ~200-word vocabulary"
    out, pool, laps = chat_rows(rows, seed)
    return out, f"real text: {pool.describe()}, {laps} laps over the pool"


def load_average() -> str:
    """The 1/5/15-minute load averages, to print beside every figure."""
    import os

    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def machine() -> str:
    """CPU model, core count and load average: the line a figure needs beside it."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}; load average {load_average()}"


__all__ = [
    "GENERATOR_VERSION",
    "chat_rows",
    "conversations",
    "load_average",
    "machine",
    "plain_texts",
    "synthetic_rows",
    "text_pool",
    "zipf_texts",
]
