"""Deterministic support-ticket generator for the quickstart.

The task: turn a customer message into a strict JSON record with four closed label
sets. It is the kind of job teams first solve with a long prompt on a big model, and
where a small prompted model drifts (invented labels, prose around the JSON, missing
keys). Each label is recoverable from the text, so a fine-tuned small model can learn
it; the phrasing varies (templates x slot fillers x tone x typos) so near-duplicate
removal keeps almost every row.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from ladle.paths import atomic_write_text

CATEGORIES = ("billing", "technical", "shipping", "account", "refund")
PRIORITIES = ("low", "medium", "high", "urgent")
PRODUCTS = ("router", "smartwatch", "laptop", "headphones", "mobile_app", "subscription")
SENTIMENTS = ("positive", "neutral", "negative")
FIELDS = ("category", "priority", "product", "sentiment")
PHYSICAL = ("router", "smartwatch", "laptop", "headphones")
HARDWARE_WORDS = ("battery", "hot", "turn on", "pair", "black screen", "disconnecting")

# Realistic imbalance: most tickets are technical or billing, few are urgent.
CATEGORY_WEIGHTS = (0.25, 0.32, 0.17, 0.14, 0.12)
PRIORITY_WEIGHTS = (0.30, 0.38, 0.22, 0.10)
SENTIMENT_WEIGHTS = (0.15, 0.40, 0.45)

PRODUCT_NAMES = {
    "router": ["router", "wifi router", "AX3000 router", "mesh router", "home router"],
    "smartwatch": ["smartwatch", "watch", "fitness watch", "Pulse watch", "smart watch"],
    "laptop": ["laptop", "notebook", "ultrabook", "work laptop", "15 inch laptop"],
    "headphones": ["headphones", "earbuds", "noise cancelling headphones", "headset", "buds"],
    "mobile_app": ["mobile app", "app", "iOS app", "Android app", "phone app"],
    "subscription": ["subscription", "premium plan", "monthly plan", "membership", "annual plan"],
}

PROBLEMS = {
    "billing": [
        "I was charged twice for my {p} this month",
        "the invoice for my {p} shows the wrong amount",
        "my card got billed for the {p} even though I cancelled",
        "there is an unknown charge of ${n} related to the {p}",
        "the price of the {p} went up without any notice",
        "I can't find the receipt for the {p} I paid for",
    ],
    "technical": [
        "my {p} keeps disconnecting every few minutes",
        "the {p} won't turn on since the last update",
        "the {p} crashes as soon as I open it",
        "the battery on my {p} drains in about {n} hours",
        "the {p} is stuck on a black screen",
        "I can't pair the {p} with anything anymore",
        "the {p} gets really hot and then shuts down",
    ],
    "shipping": [
        "my {p} order still hasn't arrived after {n} days",
        "the tracking for my {p} hasn't updated in a week",
        "the {p} was delivered to the wrong address",
        "the box with my {p} arrived crushed",
        "I ordered the {p} with express shipping but it's late",
        "the courier says the {p} was delivered but nothing came",
    ],
    "account": [
        "I can't log in to the account linked to my {p}",
        "I need to change the email on my account for the {p}",
        "my password reset link for the {p} account never arrives",
        "someone else seems to be using my {p} account",
        "two-factor codes for the {p} account are not working",
        "I want to merge my two accounts, one has the {p}",
    ],
    "refund": [
        "I'd like a refund for the {p}, it's not what I expected",
        "I returned the {p} {n} days ago and still no refund",
        "please refund the {p}, it arrived broken",
        "how do I get my money back for the {p}",
        "I was promised a refund for the {p} but nothing happened",
        "the refund for my {p} was only partial",
    ],
}

URGENCY = {
    "low": [
        "no rush on this",
        "whenever you get a chance",
        "just letting you know",
        "not urgent at all",
        "it's a minor thing",
    ],
    "medium": [
        "please look into it",
        "would appreciate a reply this week",
        "can someone check this",
        "hoping to get this sorted soon",
    ],
    "high": [
        "I need this fixed today",
        "this is blocking my work",
        "please respond quickly",
        "this is becoming a serious problem",
    ],
    "urgent": [
        "URGENT: I need help right now",
        "this is an emergency, please call me",
        "I need this resolved immediately",
        "ASAP please, I'm losing money by the hour",
    ],
}

TONE = {
    "positive": {
        "open": [
            "Hi team, love your products!",
            "Hello, thanks for the great service so far.",
            "Hey there, big fan here.",
            "Good morning, you've always been helpful.",
        ],
        "close": [
            "Thanks so much, you're the best!",
            "Really appreciate your help :)",
            "Cheers and keep up the good work.",
            "Thank you in advance, great team!",
        ],
    },
    "neutral": {
        "open": ["Hello,", "Hi,", "Good afternoon.", "Dear support,", ""],
        "close": ["Thanks.", "Regards.", "Best,", "Thank you.", ""],
    },
    "negative": {
        "open": [
            "This is ridiculous.",
            "I'm really frustrated.",
            "Honestly, terrible experience.",
            "I am very disappointed.",
            "Not happy at all.",
        ],
        "close": [
            "Fix it or I'm switching brands.",
            "Worst support ever.",
            "I expect better than this.",
            "Very annoyed.",
            "Do better.",
        ],
    },
}

DETAILS = [
    "Order number {o}.",
    "I'm on the latest version.",
    "I already restarted it twice.",
    "My account email is {e}.",
    "This started on {d}.",
    "I tried the steps in the FAQ.",
    "It happened again this morning.",
    "My neighbour has the same issue.",
    "I bought it in {d}.",
    "Serial {o}.",
    "",
]
NAMES = ["alex", "sam", "maria", "li.wei", "jonas", "priya", "tom", "fatima", "kenji", "olga"]
MONTHS = ["January", "March", "April", "June", "August", "October", "December"]


def _typo(text: str, rng: random.Random) -> str:
    """Swap two neighbouring letters in one word: real tickets are not proofread."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def make_ticket(rng: random.Random) -> tuple[str, dict[str, str]]:
    category = rng.choices(CATEGORIES, CATEGORY_WEIGHTS)[0]
    priority = rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0]
    sentiment = rng.choices(SENTIMENTS, SENTIMENT_WEIGHTS)[0]
    physical = category == "shipping" or rng.random() < 0.7
    product = rng.choice(PHYSICAL if physical else PRODUCTS)
    fill = {
        "p": rng.choice(PRODUCT_NAMES[product]),
        "n": str(rng.randint(2, 60)),
        "o": f"#{rng.randint(10000, 99999)}",
        "e": f"{rng.choice(NAMES)}{rng.randint(1, 99)}@example.com",
        "d": f"{rng.choice(MONTHS)} {rng.randint(1, 28)}",
    }
    templates = PROBLEMS[category]
    if product not in PHYSICAL:  # an app has no battery and is never delivered crushed
        templates = [t for t in templates if not any(w in t for w in HARDWARE_WORDS)]
    problem = rng.choice(templates).format(**fill)
    problem = problem[0].upper() + problem[1:] + rng.choice([".", "!", "...", ""])
    parts = [
        rng.choice(TONE[sentiment]["open"]),
        problem,
        rng.choice(DETAILS).format(**fill),
        rng.choice(URGENCY[priority]).capitalize() + ".",
        rng.choice(DETAILS).format(**fill) if rng.random() < 0.3 else "",
        rng.choice(TONE[sentiment]["close"]),
    ]
    if rng.random() < 0.35:  # the urgency line sometimes comes first
        parts.insert(1, parts.pop(3))
    text = " ".join(p for p in parts if p)
    if rng.random() < 0.3:
        text = _typo(text, rng)
    if rng.random() < 0.1:
        text = text.lower()
    return text, {
        "category": category,
        "priority": priority,
        "product": product,
        "sentiment": sentiment,
    }


def answer_json(labels: dict[str, str]) -> str:
    """The one accepted output format: compact JSON, keys in FIELDS order."""
    return json.dumps({k: labels[k] for k in FIELDS}, separators=(", ", ": "))


def generate(n: int, seed: int) -> Iterator[dict[str, object]]:
    """Rows in `messages` format: the user's ticket and the assistant's JSON record."""
    rng = random.Random(seed)
    for _ in range(n):
        text, labels = make_ticket(rng)
        yield {
            "messages": [
                {"role": "user", "content": text},
                {"role": "assistant", "content": answer_json(labels)},
            ]
        }


SYSTEM_PROMPT = (
    "You are a support-ticket classifier. Reply with ONLY a JSON object with exactly these "
    "keys and allowed values:\n"
    f"- category: one of {', '.join(CATEGORIES)}\n"
    f"- priority: one of {', '.join(PRIORITIES)}\n"
    f"- product: one of {', '.join(PRODUCTS)}\n"
    f"- sentiment: one of {', '.join(SENTIMENTS)}\n"
    'Example: {"category": "billing", "priority": "low", "product": "laptop", '
    '"sentiment": "neutral"}'
)

JSON_SCHEMA = {
    "type": "object",
    "required": list(FIELDS),
    "additionalProperties": False,
    "properties": {
        "category": {"enum": list(CATEGORIES)},
        "priority": {"enum": list(PRIORITIES)},
        "product": {"enum": list(PRODUCTS)},
        "sentiment": {"enum": list(SENTIMENTS)},
    },
}


def corrupt(labels: dict[str, str], rng: random.Random) -> str:
    """A plausible wrong answer for DPO: a wrong label, a missing key, prose around the
    JSON or broken syntax, the failure modes a prompted small model shows."""
    kind = rng.randrange(4)
    if kind == 0:
        field = rng.choice(FIELDS)
        choices = {
            "category": CATEGORIES,
            "priority": PRIORITIES,
            "product": PRODUCTS,
            "sentiment": SENTIMENTS,
        }[field]
        wrong = dict(labels, **{field: rng.choice([c for c in choices if c != labels[field]])})
        return answer_json(wrong)
    if kind == 1:
        drop = rng.choice(FIELDS)
        return json.dumps({k: labels[k] for k in FIELDS if k != drop}, separators=(", ", ": "))
    if kind == 2:
        return f"Sure! Here is the JSON for this ticket: {answer_json(labels)}"
    return answer_json(labels).replace('"', "'")


def generate_preference(n: int, seed: int) -> Iterator[dict[str, object]]:
    """Preference rows (prompt, chosen, rejected) from the same generator."""
    rng = random.Random(seed)
    for _ in range(n):
        text, labels = make_ticket(rng)
        yield {"prompt": text, "chosen": answer_json(labels), "rejected": corrupt(labels, rng)}


def write_jsonl(path: Path, rows: Iterable[dict[str, object]]) -> Path:
    """Write rows as JSONL, atomically (an interrupted run leaves no partial file)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write_text(Path(path), text)
    return Path(path)
