"""Tasks: each one is a ``datasets.DatasetDict`` with splits train/dev/test and columns id/source/target.

Two families share one entry point, :func:`load_task`:

* **Embedded tasks** (``mini-xsum``, ``mini-europarl``, ``mini-gsm8k``) are generated here,
  deterministically from a seed, so the whole kit runs on a laptop with no network. Each mirrors
  one of the paper's datasets (seed 000, Sec. 3.1):

  - ``mini-xsum``: a 3-6 sentence news-like document about one event (main actor, event, place,
    time) padded with distractors (quotes, background, a rival actor's event last year); the
    target is one *abstractive* headline-style sentence (actor shortened, event verb paraphrased
    through a lexicon, place folded in), never a substring of the document.
  - ``mini-europarl``: English -> Dutch from a small bilingual grammar with Dutch word order:
    verb-second main clauses with inversion after a fronted adverbial or subordinate clause,
    verb-final subordinate and relative clauses, separable verbs (``wijst ... af``), the perfect
    with the participle at the end, de/het gender with adjective inflection, ``niet`` placement.
  - ``mini-gsm8k``: 2-4 step word problems whose solutions use GSM8K's own format, one worded
    step per line with a calculator annotation (``... 48/2 = <<48/2=24>>24 clips ...``) and a
    final ``#### 72`` line. All results are integers by construction.

  ``load_task`` caches a generated task as JSONL under ``cache_dir/data/<name>-<hash>/``; the
  folder counts as complete only once ``meta.json`` (written last, atomically) exists.

* **Hub tasks** (``xsum``, ``europarl``, ``gsm8k``) are the paper's datasets, read either from the
  Hugging Face hub (``EdinburghNLP/xsum``; ``Helsinki-NLP/europarl`` config ``en-nl``;
  ``openai/gsm8k`` config ``main``) or from local files in the hub's own schema
  (JSONL/JSON/Parquet/CSV). Missing splits are carved out of train with the paper's sizes
  (Table 3, App. C), scaled down for small files. ``trust_remote_code`` is never used.

This module imports nothing else of the kit (floor 1, but self-contained).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import re
import tempfile
import warnings
from typing import Callable, Iterator

import datasets
import numpy as np

__all__ = [
    "DEFAULT_PROMPTS",
    "DEFAULT_SIZES",
    "EMBEDDED_TASKS",
    "FEATURES",
    "GENERATOR_VERSION",
    "HUB_SOURCES",
    "HUB_TASKS",
    "PAPER_SPLIT_SIZES",
    "SPLITS",
    "apply_prompt",
    "generate_embedded",
    "generate_examples",
    "load_task",
    "task_kind",
]

EMBEDDED_TASKS = ("mini-xsum", "mini-europarl", "mini-gsm8k")
HUB_TASKS = ("xsum", "europarl", "gsm8k")
SPLITS = ("train", "dev", "test")

# Bump whenever a generator's output changes: it is part of the cache key.
GENERATOR_VERSION = 2

# (n_train, n_dev, n_test) when load_task is given None.
DEFAULT_SIZES = {name: (4000, 300, 300) for name in EMBEDDED_TASKS}

# Hub dataset name and config of each real task.
HUB_SOURCES = {
    "xsum": ("EdinburghNLP/xsum", None),
    "europarl": ("Helsinki-NLP/europarl", "en-nl"),
    "gsm8k": ("openai/gsm8k", "main"),
}

# The paper's split sizes (seed 000, App. C, Table 3). Used as the default size of a split that
# has to be carved out of train (Europarl dev/test, GSM8K dev), scaled down for small files.
PAPER_SPLIT_SIZES = {
    "xsum": {"train": 202_926, "dev": 11_332, "test": 11_333},
    "europarl": {"train": 1_167_808, "dev": 10_014, "test": 10_016},
    "gsm8k": {"train": 6_705, "dev": 768, "test": 1_319},
}

_KINDS = {
    "mini-xsum": "summarization",
    "xsum": "summarization",
    "mini-europarl": "translation",
    "europarl": "translation",
    "mini-gsm8k": "arithmetic",
    "gsm8k": "arithmetic",
}

FEATURES = datasets.Features(
    {"id": datasets.Value("string"), "source": datasets.Value("string"), "target": datasets.Value("string")}
)

# Student prompts follow T5's task prefixes. The paper prompts FLAN-T5-XL zero-shot for XSum, so
# its teacher prompt is an instruction; for Europarl and GSM8K the teacher is fine-tuned on the
# same prompt as the student. Embedded teachers are trained from scratch on the student prompt.
DEFAULT_PROMPTS: dict[str, dict[str, str]] = {
    "mini-xsum": {"student": "summarize: {source}", "teacher": "summarize: {source}"},
    "mini-europarl": {
        "student": "translate English to Dutch: {source}",
        "teacher": "translate English to Dutch: {source}",
    },
    "mini-gsm8k": {"student": "solve: {source}", "teacher": "solve: {source}"},
    "xsum": {
        "student": "summarize: {source}",
        "teacher": "Summarize this article in one sentence.\n\n{source}",
    },
    "europarl": {
        "student": "translate English to Dutch: {source}",
        "teacher": "translate English to Dutch: {source}",
    },
    "gsm8k": {"student": "solve: {source}", "teacher": "solve: {source}"},
}


# =============================================================================================
# Small public helpers
# =============================================================================================


def task_kind(name: str) -> str:
    """``"summarization"``, ``"translation"`` or ``"arithmetic"``; ValueError for an unknown task."""
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r}; known tasks: {', '.join(EMBEDDED_TASKS + HUB_TASKS)}"
        ) from None


def apply_prompt(template: str, source: str) -> str:
    """Put ``source`` where ``{source}`` is in ``template``.

    Plain substitution rather than ``str.format``, so braces elsewhere in the template or in the
    source are left alone.
    """
    if "{source}" not in template:
        raise ValueError(f"prompt template must contain '{{source}}': {template!r}")
    return template.replace("{source}", source)


def _derive_seed(*parts: object) -> int:
    """A 64-bit seed from any parts, stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(word: str) -> str:
    """English indefinite article for ``word`` ("a European", "an important")."""
    w = word.lower()
    vowel = w[:1] in "aeiou" and not w.startswith(("eu", "uni", "use"))
    return "an" if vowel else "a"


# =============================================================================================
# mini-xsum: abstractive one-sentence summaries of generated news stories
# =============================================================================================

_TOWNS = (
    "Lindenburg", "Oakfield", "Westmoor", "Kelbridge", "Fairhaven", "Dunmore", "Caldwick",
    "Rosemere", "Hollowell", "Brinton", "Eastwater", "Norbury", "Glenford", "Stonecroft",
    "Millbrook", "Redcliff", "Ashvale", "Thornbury", "Kingsmere", "Larkhill", "Penrose",
    "Whitmore", "Ravensby", "Elmstead", "Sandwick", "Brookley", "Fenwick", "Greyhaven",
    "Bellmont", "Corrin", "Dalby", "Eskdale", "Farnley", "Garston", "Helmsby", "Kirkwood",
    "Lowther", "Marsden", "Netherby", "Orton", "Pelham", "Rowley", "Tarleton", "Upwell",
    "Varley", "Wexcombe", "Yarrow", "Hadleigh",
)
_FIRST_NAMES = (
    "Anna", "Mark", "Sarah", "James", "Laura", "Peter", "Helen", "David", "Emma", "Robert",
    "Claire", "Simon", "Rachel", "Tom", "Julia", "Martin", "Alice", "Paul", "Fiona", "Daniel",
    "Karen", "Steven", "Nadia", "Omar", "Priya", "Lucas", "Megan", "Owen", "Ruth", "Victor",
)
_LAST_NAMES = (
    "Harper", "Collins", "Baker", "Morgan", "Hughes", "Turner", "Price", "Walsh", "Fletcher",
    "Gray", "Lawson", "Marsh", "Dixon", "Reed", "Palmer", "Shaw", "Holt", "Fisher", "Burke",
    "Warren", "Quinn", "Doyle", "Hayes", "Carter", "Ellis", "Frost", "Kemp", "Lowe", "Nash", "Webb",
)
_TIMES = (
    "on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Friday", "on Saturday",
    "on Sunday", "last week", "earlier this month", "this morning", "on Tuesday evening",
    "late on Friday",
)
_QUOTES = (
    "This is an important day for the area",
    "We have listened carefully to local people",
    "It was a difficult decision",
    "We are very proud of what we have achieved",
    "This will make a real difference",
    "We expect a lot of interest",
    "The timing could not be worse",
    "Nobody saw this coming",
    "We will keep a close eye on the situation",
    "People here deserve better",
)

# Council-type actors: (as the document names them, as the summary names them).
_COUNCIL_ACTORS = (
    ("the mayor of {T}", "{T} mayor"),
    ("the city council of {T}", "{T} council"),
    ("the council in {T}", "{T} council"),
    ("the governor of {T}", "{T} governor"),
    ("the regional government of {T}", "{T} government"),
)
_INFRA = (
    "bridge", "school", "hospital", "library", "park", "tram line", "swimming pool",
    "sports centre", "bus station", "museum", "concert hall", "ring road", "cycle path",
    "fire station", "health centre", "car park", "market hall", "railway station",
    "community centre", "theatre",
)
_BANNED = ("cars", "fireworks", "lorries", "street parking", "e-scooters", "barbecues", "dogs", "buskers")
_SERVICES = (
    "libraries", "bus services", "youth clubs", "street lighting", "road repairs",
    "park maintenance", "school meals", "bin collections",
)
_FEES = ("parking charges", "bus fares", "council tax", "swimming pool prices", "market rents")

# Each event: doc phrases (past tense, the place is appended as "in {P}" or given in a separate
# place sentence), the summary template ({A} = short actor, {P} = place), place sentences, and
# optional reasons ("why": document phrase -> headline phrase, added before the final period).
_COUNCIL_EVENTS = (
    {
        "doc": ("announced plans to build a new {infra}", "revealed plans for a new {infra}"),
        "sum": "{A} unveils {infra} plans for {P}.",
        "place": ("The new {infra} will be built in {P}.", "The {infra} is planned for a site in {P}."),
        "why": (("to ease traffic congestion", "to tackle congestion"), ("to attract more visitors", "in bid to draw visitors")),
        "slots": ("infra",),
    },
    {
        "doc": ("officially opened the new {infra}", "opened a new {infra}"),
        "sum": "New {infra} for {P} opened by {A}.",
        "place": ("The {infra} is located in {P}.", "The opening ceremony took place in {P}."),
        "why": (("after two years of building work", "after lengthy works"), ("ahead of the summer holidays", "ahead of summer")),
        "slots": ("infra",),
    },
    {
        "doc": ("decided to close the {infra}", "confirmed that the {infra} would close"),
        "sum": "{A} confirms closure of {infra} in {P}.",
        "place": ("The {infra} is in {P}.", "The {infra} has served {P} for {k} years."),
        "why": (("citing rising costs", "over rising costs"), ("because of falling visitor numbers", "as visitor numbers fall")),
        "slots": ("infra", "k"),
    },
    {
        "doc": ("voted to ban {banned} from the town centre", "introduced a ban on {banned}"),
        "sum": "{Banned} outlawed in {P} by {A}.",
        "place": ("The ban will apply in {P}.", "The new rules will cover {P}."),
        "why": (("after complaints from residents", "following complaints"), ("to improve safety", "in safety drive")),
        "slots": ("banned",),
    },
    {
        "doc": ("agreed to cut funding for {service}", "approved a reduction in spending on {service}"),
        "sum": "{A} slashes {service} budget in {P}.",
        "place": ("The cuts will affect {P}.", "Residents in {P} will be most affected."),
        "why": (("to save money", "to save cash"), ("citing a gap in its budget", "to plug budget gap")),
        "slots": ("service",),
    },
    {
        "doc": ("agreed to raise {fee} by {pct} percent", "said {fee} would go up by {pct} percent"),
        "sum": "{A} approves {pct}% rise in {fee} for {P}.",
        "place": ("The increase will apply in {P}.", "The change will affect people in {P}."),
        "why": (("to help balance the budget", "to balance books"), ("citing rising costs", "over rising costs")),
        "slots": ("fee", "pct"),
    },
    {
        "doc": (
            "approved a budget of {m} million pounds for {service}",
            "agreed to spend {m} million pounds on {service}",
        ),
        "sum": "{A} backs {m}m pound boost for {service} in {P}.",
        "place": ("The money will be spent in {P}.", "Most of the money will go to {P}."),
        "why": (("after a public consultation", "following consultation"), ("to help young families", "to support families")),
        "slots": ("service", "m"),
    },
)

_INDUSTRIES = (
    # (industry word, name suffixes, products)
    ("food", ("Foods", "Bakeries", "Dairies"), ("frozen pizzas", "breakfast cereals", "yoghurts", "biscuits", "ready meals")),
    ("car", ("Motors", "Automotive"), ("electric cars", "family cars", "vans", "car batteries")),
    ("clothing", ("Textiles", "Fashion"), ("winter coats", "trainers", "school uniforms", "jeans")),
    ("drinks", ("Drinks", "Brewing"), ("soft drinks", "beers", "bottled water", "energy drinks")),
    ("toy", ("Toys", "Games"), ("board games", "dolls", "toy cars", "puzzles")),
    ("electronics", ("Electronics", "Technologies"), ("smartphones", "laptops", "headphones", "televisions")),
)
_COMPANY_PREFIXES = (
    "Brightwell", "Norhaven", "Castlefield", "Redmoor", "Silverdale", "Ashcombe", "Greenway",
    "Hartley", "Bluestone", "Kingsley", "Mayfield", "Oakridge", "Westbrook", "Pinecrest",
    "Harbourside", "Summit",
)
_FACILITIES = (
    "factory", "warehouse", "office", "call centre", "distribution centre", "research centre",
    "store", "plant",
)
_COMPANY_EVENTS = (
    {
        "doc": ("opened a new {facility}", "officially opened a {facility}"),
        "sum": "{P} welcomes new {A} {facility}.",
        "place": ("The {facility} is in {P}.", "The new site is located in {P}."),
        "why": (("to meet growing demand", "to keep up with demand"), ("after a record year", "after bumper year")),
        "slots": ("facility",),
    },
    {
        "doc": ("announced that it would close its {facility}", "said it planned to close its {facility}"),
        "sum": "{A} confirms plans to shut its {P} {facility}.",
        "place": ("The {facility} is in {P}.", "The site in {P} has been open for {k} years."),
        "why": (("citing weak demand", "amid weak demand"), ("after a fall in sales", "as sales slump")),
        "slots": ("facility", "k"),
    },
    {
        "doc": ("said it would cut {n} jobs at its {facility}", "announced plans to cut {n} jobs at its {facility}"),
        "sum": "{n} jobs to go at {A} {facility} in {P}.",
        "place": ("The {facility} is in {P}.", "The affected site is in {P}."),
        "why": (("citing weak demand", "amid weak demand"), ("after a fall in sales", "as sales slump")),
        "slots": ("facility", "n"),
    },
    {
        "doc": ("said it would hire {n} new workers", "announced plans to take on {n} staff"),
        "sum": "{A} to create {n} jobs in {P}.",
        "place": ("The new staff will work in {P}.", "The jobs will be based in {P}."),
        "why": (("to meet growing demand", "to keep up with demand"), ("after a record year", "after bumper year")),
        "slots": ("n",),
    },
    {
        "doc": ("recalled thousands of its {product}", "asked customers to return its {product}"),
        "sum": "{A} pulls {product} from shops in {P}.",
        "place": ("The problem was first reported in {P}.", "Most of the products were sold in {P}."),
        "why": (("over safety concerns", "amid safety fears"), ("after customers reported problems", "after complaints")),
        "slots": ("product",),
    },
    {
        "doc": ("launched a new range of {product}", "started selling a new line of {product}"),
        "sum": "{A} unveils new {product} in {P}.",
        "place": ("The launch event was held in {P}.", "The products will first go on sale in {P}."),
        "why": (("to attract younger customers", "to lure younger buyers"), ("after a record year", "after bumper year")),
        "slots": ("product",),
    },
    {
        "doc": ("signed a deal with {other}", "agreed a partnership with {other}"),
        "sum": "{A} strikes deal with {other} in {P}.",
        "place": ("The agreement was signed in {P}.", "The two firms met in {P}."),
        "why": (("to expand abroad", "to grow overseas"), ("to reduce costs", "in cost-cutting move")),
        "slots": ("other",),
    },
)

_CLUB_SUFFIXES = ("United", "Rovers", "Athletic", "City", "Wanderers", "Town")
_CUPS = ("county cup", "regional cup", "city trophy", "spring cup", "league cup", "charity shield")
_CLUB_EVENTS = (
    {
        "doc": ("beat {other} {s1}-{s2} to win the {cup}", "won the {cup} with a {s1}-{s2} victory over {other}"),
        "sum": "{A} clinch {cup} after beating {other} in {P}.",
        "place": ("The final was played in {P}.", "The match took place in {P}."),
        "why": (("in front of a record crowd", "before record crowd"), ("after a penalty shootout", "on penalties")),
        "slots": ("other", "score", "cup"),
    },
    {
        "doc": ("lost {s1}-{s2} to {other} in the {cup} final", "were beaten {s1}-{s2} by {other} in the {cup} final"),
        "sum": "{Other} beat {A} to lift {cup} in {P}.",
        "place": ("The final was played in {P}.", "The match took place in {P}."),
        "why": (("after a penalty shootout", "on penalties"), ("in front of a record crowd", "before record crowd")),
        "slots": ("other", "score", "cup"),
    },
    {
        "doc": ("revealed plans for a new stadium", "announced plans to build a new ground"),
        "sum": "{A} unveil stadium plans for {P}.",
        "place": ("The stadium would be built in {P}.", "The club has bought land in {P}."),
        "why": (("to increase capacity", "to boost capacity"), ("after years of sharing a ground", "to end groundshare")),
        "slots": (),
    },
    {
        "doc": ("opened a new training academy", "opened a youth academy for young players"),
        "sum": "{A} launch youth academy in {P}.",
        "place": ("The academy is based in {P}.", "The academy has been set up in {P}."),
        "why": (("to develop local talent", "to nurture local talent"), ("after a successful season", "after strong season")),
        "slots": (),
    },
)

_ROLES = {
    "council": ("a local resident", "an opposition councillor", "a local business owner", "the head of a residents group"),
    "company": ("a union official", "a local shop owner", "an industry analyst", "a former employee"),
    "club": ("a supporters club member", "a club director", "a former player", "a local fan"),
}
_BACKGROUND = {
    "council": (
        "{T} has a population of about {pop} people.",
        "The plan was first discussed {k} years ago.",
        "Local elections are due to take place next year.",
        "The last major project in the area was finished in {year}.",
    ),
    "company": (
        "{A} was founded in {year} and employs about {emp} people.",
        "Shares in {A} rose by {pct} percent.",
        "The company has struggled with rising costs.",
        "{A} also has sites in {T2} and {T3}.",
    ),
    "club": (
        "{A} last won a trophy in {year}.",
        "The club was founded in {year}.",
        "More than {crowd} fans attended the match.",
        "The club currently sits {ordinal} in the league.",
    ),
}
_ENDINGS = {
    "council": (
        "Work is expected to begin next spring.",
        "Residents can comment at a public meeting next month.",
        "A final vote is expected in the autumn.",
    ),
    "company": (
        "Union leaders said they would seek talks.",
        "The changes are expected to take effect next year.",
        "Staff were told about the plans at a meeting.",
    ),
    "club": (
        "Fans celebrated in the streets after the match.",
        "The manager praised the players after the game.",
        "The club will face another test next weekend.",
    ),
}
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def _xsum_actor(rng: random.Random, kind: str, town: str) -> tuple[str, str, dict]:
    """(document name, summary name, extra slots) of an actor of this kind based in ``town``."""
    if kind == "council":
        full, short = rng.choice(_COUNCIL_ACTORS)
        return full.format(T=town), short.format(T=town), {}
    if kind == "company":
        industry, suffixes, products = rng.choice(_INDUSTRIES)
        name = f"{rng.choice(_COMPANY_PREFIXES)} {rng.choice(suffixes)}"
        form = rng.randrange(3)
        if form == 0:
            full = name
        elif form == 1:
            full = f"the {industry} company {name}"
        else:
            full = f"{name}, {_a(industry)} {industry} firm based in {town},"
        return full, name, {"products": products}
    name = f"{town} {rng.choice(_CLUB_SUFFIXES)}"
    full = name if rng.random() < 0.6 else f"the football club {name}"
    return full, name, {}


def _xsum_slots(rng: random.Random, kind: str, needed: tuple[str, ...], actor_short: str,
                extra: dict, towns: list[str]) -> dict:
    s: dict = {"k": rng.randint(3, 40)}
    for slot in needed:
        if slot == "infra":
            s["infra"] = rng.choice(_INFRA)
        elif slot == "banned":
            s["banned"] = rng.choice(_BANNED)
            s["Banned"] = _cap(s["banned"])
        elif slot == "service":
            s["service"] = rng.choice(_SERVICES)
        elif slot == "fee":
            s["fee"] = rng.choice(_FEES)
        elif slot == "pct":
            s["pct"] = rng.choice((5, 8, 10, 12, 15, 20, 25, 30))
        elif slot == "m":
            s["m"] = rng.randint(2, 60)
        elif slot == "facility":
            s["facility"] = rng.choice(_FACILITIES)
        elif slot == "n":
            s["n"] = rng.choice((40, 60, 80, 100, 120, 150, 200, 250, 300, 400, 500))
        elif slot == "product":
            s["product"] = rng.choice(extra["products"])
        elif slot == "other":
            if kind == "company":
                while True:
                    other = f"{rng.choice(_COMPANY_PREFIXES)} {rng.choice(rng.choice(_INDUSTRIES)[1])}"
                    if other.split()[0] != actor_short.split()[0]:
                        break
            else:
                other = f"{towns.pop()} {rng.choice(_CLUB_SUFFIXES)}"
            s["other"], s["Other"] = other, other
        elif slot == "score":
            s1 = rng.randint(1, 5)
            s["s1"], s["s2"] = s1, rng.randint(0, s1 - 1)
        elif slot == "cup":
            s["cup"] = rng.choice(_CUPS)
    return s


def _gen_xsum(rng: random.Random) -> tuple[str, str]:
    while True:  # keep documents at 38-90 words
        document, summary = _xsum_story(rng)
        if 38 <= len(document.split()) <= 90:
            return document, summary


def _xsum_story(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("council", "council", "company", "company", "club"))
    towns = rng.sample(_TOWNS, 9)  # actor's town, place, and spares for the other slots
    home, place = towns.pop(), towns.pop()
    full, short, extra = _xsum_actor(rng, kind, home)
    events = {"council": _COUNCIL_EVENTS, "company": _COMPANY_EVENTS, "club": _CLUB_EVENTS}[kind]
    event = rng.choice(events)
    slots = _xsum_slots(rng, kind, event["slots"], short, extra, towns)
    fill = dict(slots, A=short, P=place)
    doc_event = rng.choice(event["doc"]).format(**fill)
    time = rng.choice(_TIMES)
    why_doc, why_sum = rng.choice(event["why"]) if rng.random() < 0.5 else ("", "")
    why_doc = f", {why_doc}" if why_doc else ""

    # The main sentence, in one of several orders; sometimes the place is in its own sentence.
    split_place = rng.random() < 0.35
    if split_place:
        if rng.random() < 0.5:
            main = f"{_cap(full)} {doc_event} {time}{why_doc}."
        else:
            main = f"{_cap(time)}, {full} {doc_event}{why_doc}."
        main_sentences = [main, rng.choice(event["place"]).format(**fill)]
    else:
        form = rng.randrange(3)
        if form == 0:
            main = f"{_cap(time)}, {full} {doc_event} in {place}{why_doc}."
        elif form == 1:
            main = f"{_cap(full)} {doc_event} in {place} {time}{why_doc}."
        else:
            main = f"In {place}, {full} {doc_event} {time}{why_doc}."
        main_sentences = [main]

    # Distractors: quote, background, a rival's event last year, a closing line.
    person = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
    role = rng.choice(_ROLES[kind])
    quote = rng.choice(_QUOTES)
    if rng.random() < 0.5:
        quote_sentence = f'"{quote}," said {person}, {role}.'
    else:
        quote_sentence = f'{person}, {role}, said: "{quote}."'
    bg_fill = {
        "T": rng.choice((home, place)), "A": short, "T2": towns[0], "T3": towns[1],
        "pop": rng.choice((12, 18, 25, 40, 60, 85, 120)) * 1000, "k": rng.randint(2, 15),
        "year": rng.randint(1950, 2015), "emp": rng.choice((150, 300, 800, 1200, 2500)),
        "pct": rng.randint(2, 9), "crowd": rng.choice((2000, 5000, 8000, 12000)),
        "ordinal": rng.choice(_ORDINALS),
    }
    backgrounds = [b.format(**bg_fill) for b in rng.sample(_BACKGROUND[kind], 2)]
    while True:  # a rival whose name does not start like the main actor's
        rival_full, rival_short, rival_extra = _xsum_actor(rng, kind, towns[2])
        if rival_short.split()[0] != short.split()[0]:
            break
    rival_event = rng.choice([e for e in events if e is not event])
    rival_slots = _xsum_slots(rng, kind, rival_event["slots"], rival_full, rival_extra, [towns[4]])
    rival = f"Last year, {rival_full} {rng.choice(rival_event['doc']).format(**rival_slots)} in {towns[3]}."
    pool = [quote_sentence, backgrounds[0], backgrounds[1], rival, rng.choice(_ENDINGS[kind])]
    if kind == "club" and "score" not in event["slots"]:  # no match was played
        pool = [p for p in pool if "match" not in p]
    total = rng.randint(3, 6)
    n_distract = max(1, total - len(main_sentences))
    distractors = rng.sample(pool, min(n_distract, len(pool)))

    # The lead goes first most of the time (news style), otherwise after one or two distractors.
    position = 0 if rng.random() < 0.6 else rng.randint(1, min(2, len(distractors)))
    sentences = distractors[:position] + [main_sentences[0]] + distractors[position:]
    if split_place:
        at = rng.randint(position + 1, len(sentences))
        sentences.insert(at, main_sentences[1])
    document = " ".join(sentences)
    summary = _cap(event["sum"].format(**fill))
    if why_sum:
        summary = f"{summary[:-1]} {why_sum}."
    return document, summary


# =============================================================================================
# mini-europarl: English -> Dutch with Dutch word order
# =============================================================================================
# Nouns: English singular/plural, Dutch singular/plural, gender of the Dutch singular.
_EP_NOUNS = {
    "report": ("report", "reports", "verslag", "verslagen", "het"),
    "proposal": ("proposal", "proposals", "voorstel", "voorstellen", "het"),
    "directive": ("directive", "directives", "richtlijn", "richtlijnen", "de"),
    "budget": ("budget", "budgets", "begroting", "begrotingen", "de"),
    "amendment": ("amendment", "amendments", "amendement", "amendementen", "het"),
    "resolution": ("resolution", "resolutions", "resolutie", "resoluties", "de"),
    "plan": ("plan", "plans", "plan", "plannen", "het"),
    "regulation": ("regulation", "regulations", "verordening", "verordeningen", "de"),
    "agreement": ("agreement", "agreements", "overeenkomst", "overeenkomsten", "de"),
    "strategy": ("strategy", None, "strategie", None, "de"),
    "decision": ("decision", "decisions", "besluit", "besluiten", "het"),
    "programme": ("programme", None, "programma", None, "het"),
    "compromise": ("compromise", "compromises", "compromis", "compromissen", "het"),
    "measure": ("measure", "measures", "maatregel", "maatregelen", "de"),
    "law": ("law", "laws", "wet", "wetten", "de"),
    "treaty": ("treaty", "treaties", "verdrag", "verdragen", "het"),
    "position": ("position", "positions", "standpunt", "standpunten", "het"),
    "initiative": ("initiative", "initiatives", "initiatief", "initiatieven", "het"),
    "motion": ("motion", "motions", "motie", "moties", "de"),
    "request": ("request", "requests", "verzoek", "verzoeken", "het"),
    "text": ("text", "texts", "tekst", "teksten", "de"),
    "framework": ("framework", "frameworks", "kader", "kaders", "het"),
}
# Adjectives: English, Dutch bare form (een + het-noun), Dutch inflected form (everything else).
_EP_ADJS = {
    "new": ("nieuw", "nieuwe"), "important": ("belangrijk", "belangrijke"),
    "clear": ("duidelijk", "duidelijke"), "ambitious": ("ambitieus", "ambitieuze"),
    "common": ("gemeenschappelijk", "gemeenschappelijke"), "European": ("Europees", "Europese"),
    "social": ("sociaal", "sociale"), "economic": ("economisch", "economische"),
    "current": ("huidig", "huidige"), "final": ("definitief", "definitieve"),
    "provisional": ("voorlopig", "voorlopige"), "strong": ("sterk", "sterke"),
    "large": ("groot", "grote"), "small": ("klein", "kleine"), "good": ("goed", "goede"),
    "broad": ("breed", "brede"), "detailed": ("gedetailleerd", "gedetailleerde"),
    "joint": ("gezamenlijk", "gezamenlijke"), "difficult": ("moeilijk", "moeilijke"),
    "fair": ("eerlijk", "eerlijke"), "green": ("groen", "groene"), "modern": ("modern", "moderne"),
    "second": ("tweede", "tweede"), "practical": ("praktisch", "praktische"),
    "realistic": ("realistisch", "realistische"), "balanced": ("evenwichtig", "evenwichtige"),
    "reasonable": ("redelijk", "redelijke"),
}
_EP_NATIONALITIES = {
    "Dutch": ("Nederlands", "Nederlandse"), "German": ("Duits", "Duitse"),
    "French": ("Frans", "Franse"), "Belgian": ("Belgisch", "Belgische"),
    "Spanish": ("Spaans", "Spaanse"), "Italian": ("Italiaans", "Italiaanse"),
    "Swedish": ("Zweeds", "Zweedse"), "Polish": ("Pools", "Poolse"), "Irish": ("Iers", "Ierse"),
    "Danish": ("Deens", "Deense"), "Austrian": ("Oostenrijks", "Oostenrijkse"),
}
# Subjects (always definite): English, Dutch (with article), plural?, adjectives allowed.
_NAT = tuple(_EP_NATIONALITIES)
_EP_SUBJECTS = {
    "committee": ("the committee", "de", "commissie", False, ("new",)),
    "council": ("the council", "de", "raad", False, ()),
    "minister": ("the minister", "de", "minister", False, _NAT),
    "government": ("the government", "de", "regering", False, _NAT + ("new",)),
    "rapporteur": ("the rapporteur", "de", "rapporteur", False, ("new",)),
    "president": ("the president", "de", "voorzitter", False, ("new",)),
    "presidency": ("the presidency", "het", "voorzitterschap", False, _NAT),
    "delegation": ("the delegation", "de", "delegatie", False, _NAT),
    "group": ("the group", "de", "fractie", False, ()),
    "secretariat": ("the secretariat", "het", "secretariaat", False, ()),
    "Court": ("the Court", "het", "Hof", False, ()),
    "Parliament": ("Parliament", "het", "Parlement", False, ()),
    "member states": ("the member states", "de", "lidstaten", True, ()),
    "ministers": ("the ministers", "de", "ministers", True, _NAT),
    "citizens": ("the citizens", "de", "burgers", True, ()),
    "committees": ("the committees", "de", "commissies", True, ()),
    "governments": ("the governments", "de", "regeringen", True, ()),
}
# Verbs: English base, 3sg, past, participle; Dutch separable particle ("" if none), finite
# singular and plural without the particle, participle. Infinitive = particle + plural.
_EP_VERBS = {
    "support": ("support", "supports", "supported", "supported", "", "steunt", "steunen", "gesteund"),
    "discuss": ("discuss", "discusses", "discussed", "discussed", "", "bespreekt", "bespreken", "besproken"),
    "reject": ("reject", "rejects", "rejected", "rejected", "af", "wijst", "wijzen", "afgewezen"),
    "approve": ("approve", "approves", "approved", "approved", "goed", "keurt", "keuren", "goedgekeurd"),
    "adopt": ("adopt", "adopts", "adopted", "adopted", "aan", "neemt", "nemen", "aangenomen"),
    "submit": ("submit", "submits", "submitted", "submitted", "in", "dient", "dienen", "ingediend"),
    "examine": ("examine", "examines", "examined", "examined", "", "onderzoekt", "onderzoeken", "onderzocht"),
    "welcome": ("welcome", "welcomes", "welcomed", "welcomed", "toe", "juicht", "juichen", "toegejuicht"),
    "amend": ("amend", "amends", "amended", "amended", "", "wijzigt", "wijzigen", "gewijzigd"),
    "criticise": ("criticise", "criticises", "criticised", "criticised", "", "bekritiseert", "bekritiseren", "bekritiseerd"),
    "publish": ("publish", "publishes", "published", "published", "", "publiceert", "publiceren", "gepubliceerd"),
    "postpone": ("postpone", "postpones", "postponed", "postponed", "uit", "stelt", "stellen", "uitgesteld"),
    "withdraw": ("withdraw", "withdraws", "withdrew", "withdrawn", "in", "trekt", "trekken", "ingetrokken"),
    "accept": ("accept", "accepts", "accepted", "accepted", "", "aanvaardt", "aanvaarden", "aanvaard"),
    "prepare": ("prepare", "prepares", "prepared", "prepared", "voor", "bereidt", "bereiden", "voorbereid"),
    "implement": ("implement", "implements", "implemented", "implemented", "uit", "voert", "voeren", "uitgevoerd"),
    "defend": ("defend", "defends", "defended", "defended", "", "verdedigt", "verdedigen", "verdedigd"),
    "assess": ("assess", "assesses", "assessed", "assessed", "", "beoordeelt", "beoordelen", "beoordeeld"),
    "finance": ("finance", "finances", "financed", "financed", "", "financiert", "financieren", "gefinancierd"),
    "sign": ("sign", "signs", "signed", "signed", "", "ondertekent", "ondertekenen", "ondertekend"),
    "propose": ("propose", "proposes", "proposed", "proposed", "voor", "stelt", "stellen", "voorgesteld"),
}
# Finite auxiliaries/modals: English sg, English pl, Dutch sg, Dutch pl.
_EP_AUX = {
    "perfect": ("has", "have", "heeft", "hebben"),
    "future": ("will", "will", "zal", "zullen"),
    "must": ("must", "must", "moet", "moeten"),
    "can": ("can", "can", "kan", "kunnen"),
    "want": ("wants to", "want to", "wil", "willen"),
}
# Fronted adverbials by the tenses they combine with (English with its comma, Dutch).
_EP_ADV_GENERAL = {
    "today": ("Today", "Vandaag"), "this week": ("This week", "Deze week"), "now": ("Now", "Nu"),
    "in Brussels": ("In Brussels", "In Brussel"), "in Strasbourg": ("In Strasbourg", "In Straatsburg"),
    "therefore": ("Therefore,", "Daarom"), "unfortunately": ("Unfortunately,", "Helaas"),
    "fortunately": ("Fortunately,", "Gelukkig"), "of course": ("Of course,", "Natuurlijk"),
    "nevertheless": ("Nevertheless,", "Desondanks"), "in addition": ("In addition,", "Bovendien"),
    "in my opinion": ("In my opinion,", "Naar mijn mening"),
}
_EP_ADV_FUTURE = {
    "tomorrow": ("Tomorrow", "Morgen"), "next week": ("Next week", "Volgende week"),
    "next month": ("Next month", "Volgende maand"), "next year": ("Next year", "Volgend jaar"),
}
_EP_ADV_PAST = {
    "yesterday": ("Yesterday", "Gisteren"), "last week": ("Last week", "Vorige week"),
    "last month": ("Last month", "Vorige maand"), "last year": ("Last year", "Vorig jaar"),
}
_EP_ADVERBS = {**_EP_ADV_GENERAL, **_EP_ADV_FUTURE, **_EP_ADV_PAST}
# Subordinating conjunctions: English, Dutch, English comma before it when trailing.
_EP_CONJ = {
    "because": ("because", "omdat", False),
    "although": ("although", "hoewel", True),
    "if": ("if", "als", False),
    "while": ("while", "terwijl", True),
    "as soon as": ("as soon as", "zodra", False),
}
# Verbs of saying for reported speech: English sg, pl; Dutch sg, pl.
_EP_SAY = {
    "say": ("says", "say", "zegt", "zeggen"), "think": ("thinks", "think", "denkt", "denken"),
    "hope": ("hopes", "hope", "hoopt", "hopen"), "know": ("knows", "know", "weet", "weten"),
    "regret": ("regrets", "regret", "betreurt", "betreuren"), "expect": ("expects", "expect", "verwacht", "verwachten"),
    "note": ("notes", "note", "constateert", "constateren"),
}
_EP_TENSES = ("present", "perfect", "future", "must", "can", "want", "past")


def _ep_subject(spec: tuple[str, str | None]) -> tuple[str, str, bool]:
    """(English, Dutch, plural) of a subject spec ``(key, adjective or None)``."""
    key, adj = spec
    en, art, nl, plural, _ = _EP_SUBJECTS[key]
    if adj is not None:
        nl_adj = (_EP_NATIONALITIES.get(adj) or _EP_ADJS[adj])[1]  # definite: always inflected
        en = en.replace("the ", f"the {adj} ", 1)
        nl = f"{nl_adj} {nl}"
    return en, f"{art} {nl}", plural


def _ep_object(obj: dict) -> tuple[str, str, bool]:
    """(English, Dutch, definite) of an object spec.

    ``obj``: noun, det ("the", "a", "this", "our" or "" for a bare plural), plural, adj, and
    optionally ``of`` (a subject spec: "the report of the committee").
    """
    en_sg, en_pl, nl_sg, nl_pl, gender = _EP_NOUNS[obj["noun"]]
    plural, det, adj = obj.get("plural", False), obj["det"], obj.get("adj")
    en_noun, nl_noun = (en_pl, nl_pl) if plural else (en_sg, nl_sg)
    het = gender == "het" and not plural
    if adj is not None:
        bare, inflected = _EP_ADJS[adj]
        # The bare form only after "een" (or nothing) with a singular het-noun.
        nl_adj = bare if (det == "a" and het) else inflected
        en_noun, nl_noun = f"{adj} {en_noun}", f"{nl_adj} {nl_noun}"
    if det == "the":
        en, nl = f"the {en_noun}", f"{'het' if het else 'de'} {nl_noun}"
    elif det == "a":
        en, nl = f"{_a(en_noun)} {en_noun}", f"een {nl_noun}"
    elif det == "this":
        en, nl = f"{'these' if plural else 'this'} {en_noun}", f"{'dit' if het else 'deze'} {nl_noun}"
    elif det == "our":
        en, nl = f"our {en_noun}", f"{'ons' if het else 'onze'} {nl_noun}"
    elif det == "":
        en, nl = en_noun, nl_noun
    else:
        raise ValueError(f"unknown determiner {det!r}")
    if obj.get("of") is not None:
        of_en, of_nl, _ = _ep_subject(obj["of"])
        en, nl = f"{en} of {of_en}", f"{nl} van {of_nl}"
    return en, nl, det in ("the", "this", "our")


def _ep_clause(c: dict, order: str) -> tuple[str, str]:
    """English and Dutch of one clause.

    ``c``: subj (subject spec), verb, tense (one of ``_EP_TENSES``), obj (object spec), neg, and
    optionally rel (a relative clause on the object: subj, verb, tense).
    ``order``: "main" (S V ...), "inv" (V S ..., after a fronted constituent) or "sub" (verb-final).
    """
    subj_en, subj_nl, plural = _ep_subject(c["subj"])
    # obj None: the object is a gap (relative clauses, where the pronoun stands for it).
    obj_en, obj_nl, _ = _ep_object(c["obj"]) if c["obj"] is not None else ("", "", True)
    base, en3, en_past, en_pp, particle, nl_sg, nl_pl, nl_pp = _EP_VERBS[c["verb"]]
    tense, neg = c["tense"], c.get("neg", False)
    not_ = " not" if neg else ""

    # English verb group.
    if tense == "present":
        en_vp = (f"{'do' if plural else 'does'} not {base}") if neg else (base if plural else en3)
    elif tense == "past":
        en_vp = f"did not {base}" if neg else en_past
    elif tense == "perfect":
        en_vp = f"{_EP_AUX['perfect'][1 if plural else 0]}{not_} {en_pp}"
    else:
        en_vp = f"{_EP_AUX[tense][1 if plural else 0]}{not_} {base}"

    # Dutch: finite verb, words at the end of the middle field, the rest of the verb cluster.
    if tense == "present":
        finite = nl_pl if plural else nl_sg
        final = [particle] if particle else []
        sub_cluster = [particle + finite]  # verb-final: the particle joins the verb again
    elif tense in ("perfect", "past"):  # English simple past -> Dutch perfect
        finite = _EP_AUX["perfect"][3 if plural else 2]
        final = [nl_pp]
        sub_cluster = [finite, nl_pp]
    else:
        finite = _EP_AUX[tense][3 if plural else 2]
        final = [particle + nl_pl]  # infinitive
        sub_cluster = [finite, particle + nl_pl]
    middle = ([obj_nl] if obj_nl else []) + (["niet"] if neg else [])

    rel_en = rel_nl = ""
    if c.get("rel") is not None:
        r = c["rel"]
        _, _, _, _, gender = _EP_NOUNS[c["obj"]["noun"]]
        pron = "dat" if (gender == "het" and not c["obj"].get("plural", False)) else "die"
        r_en, r_nl = _ep_clause(dict(r, obj=None), "sub")
        rel_en, rel_nl = f" that {r_en}", f" {pron} {r_nl}"

    if order == "main":
        nl_words = [subj_nl, finite] + middle + final
    elif order == "inv":
        nl_words = [finite, subj_nl] + middle + final
    elif order == "sub":
        nl_words = [subj_nl] + middle + sub_cluster
    else:
        raise ValueError(f"unknown clause order {order!r}")
    en = " ".join(w for w in (subj_en, en_vp, obj_en) if w) + rel_en
    nl = " ".join(nl_words) + rel_nl  # a relative clause is extraposed after the verb cluster
    return en, nl


def _render_europarl(spec: dict) -> tuple[str, str]:
    """The (English, Dutch) sentence of a spec; deterministic, so tests can check exact Dutch.

    spec["kind"]:
      "simple":   [front adverbial] main clause              "Morgen bespreekt de commissie ..."
      "trailing": main clause + conj + subordinate clause    "..., omdat de minister ... steunt."
      "fronted":  conj + subordinate clause, inverted main    "Omdat ... steunt, keurt de raad ... goed."
      "reported": subject says/thinks that + subordinate      "De rapporteur zegt dat ... zal afwijzen."
    """
    kind = spec["kind"]
    if kind == "simple":
        front = spec.get("front")
        if front is None:
            en, nl = _ep_clause(spec["main"], "main")
        else:
            adv_en, adv_nl = _EP_ADVERBS[front]
            main_en, main_nl = _ep_clause(spec["main"], "inv")
            en, nl = f"{adv_en} {main_en}", f"{adv_nl} {main_nl}"
    elif kind == "trailing":
        conj_en, conj_nl, comma = _EP_CONJ[spec["conj"]]
        main_en, main_nl = _ep_clause(spec["main"], "main")
        sub_en, sub_nl = _ep_clause(spec["sub"], "sub")
        en = f"{main_en}{',' if comma else ''} {conj_en} {sub_en}"
        nl = f"{main_nl}, {conj_nl} {sub_nl}"
    elif kind == "fronted":
        conj_en, conj_nl, _ = _EP_CONJ[spec["conj"]]
        sub_en, sub_nl = _ep_clause(spec["sub"], "sub")
        main_en, main_nl = _ep_clause(spec["main"], "inv")
        en = f"{conj_en} {sub_en}, {main_en}"
        nl = f"{conj_nl} {sub_nl}, {main_nl}"
    elif kind == "reported":
        s_en, s_nl, plural = _ep_subject(spec["speaker"])
        say_en_sg, say_en_pl, say_nl_sg, say_nl_pl = _EP_SAY[spec["say"]]
        sub_en, sub_nl = _ep_clause(spec["sub"], "sub")
        en = f"{s_en} {say_en_pl if plural else say_en_sg} that {sub_en}"
        nl = f"{s_nl} {say_nl_pl if plural else say_nl_sg} dat {sub_nl}"
    else:
        raise ValueError(f"unknown sentence kind {kind!r}")
    return _cap(en) + ".", _cap(nl) + "."


def _ep_sample_subject(rng: random.Random, exclude: str | None = None) -> tuple[str, str | None]:
    key = rng.choice([k for k in _EP_SUBJECTS if k != exclude])
    adjs = _EP_SUBJECTS[key][4]
    adj = rng.choice(adjs) if adjs and rng.random() < 0.3 else None
    return key, adj


def _ep_sample_object(rng: random.Random, allow_of: bool) -> dict:
    noun = rng.choice(list(_EP_NOUNS))
    has_plural = _EP_NOUNS[noun][1] is not None
    det = rng.choices(("the", "a", "this", "our", ""), weights=(45, 20, 15, 12, 8))[0]
    plural = has_plural and (det == "" or rng.random() < 0.25)
    if det == "" and not plural:
        det = "the"
    if det == "a" and plural:
        det = ""
    obj = {"noun": noun, "det": det, "plural": plural,
           "adj": rng.choice(list(_EP_ADJS)) if rng.random() < 0.4 else None}
    if allow_of and det == "the" and rng.random() < 0.15:
        obj["of"] = _ep_sample_subject(rng)
    return obj


def _ep_sample_clause(rng: random.Random, tenses: tuple[str, ...], allow_of: bool = False) -> dict:
    tense = rng.choices(tenses, weights=[{"present": 35, "perfect": 22, "future": 15, "must": 6,
                                          "can": 6, "want": 6, "past": 20}[t] for t in tenses])[0]
    obj = _ep_sample_object(rng, allow_of)
    definite = obj["det"] in ("the", "this", "our")
    neg = definite and tense in ("present", "perfect", "future", "past") and rng.random() < 0.15
    subj = _ep_sample_subject(rng)
    return {"subj": subj, "verb": rng.choice(list(_EP_VERBS)), "tense": tense, "obj": obj, "neg": neg}


def _ep_distinct_subjects(rng: random.Random, main: dict, sub: dict) -> None:
    """Give the subordinate clause a subject other than the main clause's."""
    if sub["subj"][0] == main["subj"][0]:
        sub["subj"] = _ep_sample_subject(rng, exclude=main["subj"][0])


def _ep_sample_spec(rng: random.Random) -> dict:
    kind = rng.choices(("simple", "trailing", "fronted", "reported"), weights=(45, 22, 15, 18))[0]
    no_past = ("present", "perfect", "future", "must", "can", "want")
    if kind == "simple":
        main = _ep_sample_clause(rng, _EP_TENSES, allow_of=True)
        if main["tense"] == "past":
            front = rng.choice(list(_EP_ADV_PAST))
        elif rng.random() < 0.45:
            adverbs = list(_EP_ADV_GENERAL)
            if main["tense"] in ("present", "future", "must", "can", "want"):
                adverbs += list(_EP_ADV_FUTURE)
            front = rng.choice(adverbs)
        else:
            front = None
        # A relative clause on a definite, un-negated object without "of ...".
        obj = main["obj"]
        if (obj["det"] in ("the", "this", "our") and not main["neg"] and "of" not in obj
                and rng.random() < 0.25):
            rel = _ep_sample_clause(rng, ("present", "perfect"))
            verb = rng.choice([v for v in _EP_VERBS if v != main["verb"]])
            main["rel"] = {"subj": _ep_sample_subject(rng, exclude=main["subj"][0]),
                           "verb": verb, "tense": rel["tense"]}
        return {"kind": "simple", "front": front, "main": main}
    if kind in ("trailing", "fronted"):
        conj = rng.choice(list(_EP_CONJ) if kind == "trailing" else ["because", "although", "if", "as soon as"])
        # English uses no "will"/"must"/"want" after "if"/"as soon as", and their main clause
        # looks ahead (no perfect).
        conditional = conj in ("if", "as soon as")
        sub = _ep_sample_clause(rng, ("present", "perfect", "can") if conditional else no_past)
        main = _ep_sample_clause(rng, ("present", "future", "must", "can", "want") if conditional else no_past)
        _ep_distinct_subjects(rng, main, sub)
        return {"kind": kind, "conj": conj, "main": main, "sub": sub}
    speaker = {"subj": _ep_sample_subject(rng)}
    sub = _ep_sample_clause(rng, no_past)
    _ep_distinct_subjects(rng, speaker, sub)
    return {"kind": "reported", "speaker": speaker["subj"], "say": rng.choice(list(_EP_SAY)), "sub": sub}


def _gen_europarl(rng: random.Random) -> tuple[str, str]:
    while True:  # keep sentences short enough for the tiny models (source <= 22 words)
        en, nl = _render_europarl(_ep_sample_spec(rng))
        if len(en.split()) <= 22 and len(nl.split()) <= 22:
            return en, nl


# =============================================================================================
# mini-gsm8k: multi-step word problems in GSM8K's solution format
# =============================================================================================

_GSM_PEOPLE = (
    ("Anna", "she"), ("Ben", "he"), ("Carla", "she"), ("David", "he"), ("Elena", "she"),
    ("Felix", "he"), ("Grace", "she"), ("Hugo", "he"), ("Iris", "she"), ("Jonas", "he"),
    ("Kira", "she"), ("Liam", "he"), ("Maya", "she"), ("Noah", "he"), ("Olivia", "she"),
    ("Pablo", "he"), ("Rosa", "she"), ("Samir", "he"), ("Tara", "she"), ("Umar", "he"),
    ("Vera", "she"), ("Wes", "he"), ("Yara", "she"), ("Zane", "he"), ("Lena", "she"),
    ("Omar", "he"), ("Nina", "she"), ("Theo", "he"), ("Ella", "she"), ("Max", "he"),
    ("Ruby", "she"), ("Leo", "he"), ("Mila", "she"), ("Sam", "he"), ("Ivy", "she"), ("Jack", "he"),
)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November")
_SELL_ITEMS = ("cupcakes", "bracelets", "cookies", "tickets", "candles", "muffins", "postcards",
               "necklaces", "paintings", "jars of jam", "keychains", "plants")
_SHOP_ITEMS = ("notebooks", "pens", "books", "mugs", "shirts", "toys", "plates", "towels",
               "lamps", "scarves", "puzzles", "pillows")
_SHARE_ITEMS = ("marbles", "stickers", "candies", "apples", "cards", "crayons", "seashells", "balloons")
_PLANTS = (("tomato plant", "tomato plants", "tomatoes"), ("pepper plant", "pepper plants", "peppers"),
           ("apple tree", "apple trees", "apples"), ("bean plant", "bean plants", "beans"),
           ("strawberry plant", "strawberry plants", "strawberries"), ("lemon tree", "lemon trees", "lemons"))
_GIFTS = ("bike", "game", "jacket", "camera", "guitar", "watch", "backpack", "skateboard")
_RELATIVES = ("brother", "sister", "cousin", "friend")
_VEHICLES = ("bus", "train", "tram", "ferry")
_FRACTIONS = (("Half", 2), ("A third", 3), ("A quarter", 4), ("A fifth", 5))
_TIMES_WORDS = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}


def _step(expr: str, value: int, dollar: bool = False) -> str:
    """``expr = <<expr=value>>value`` (GSM8K's calculator annotation); ``$`` before money."""
    d = "$" if dollar else ""
    return f"{expr} = {d}<<{expr}={value}>>{value}"


def _person(rng: random.Random) -> tuple[str, str, str, str]:
    name, he = rng.choice(_GSM_PEOPLE)
    him, his = ("him", "his") if he == "he" else ("her", "her")
    return name, he, him, his


def _gsm_sales(rng):
    name, he, _, _ = _person(rng)
    item = rng.choice(_SELL_ITEMS)
    i = rng.randrange(len(_MONTHS) - 2)
    m1, m2, m3 = _MONTHS[i:i + 3]
    if rng.random() < 0.5:
        k = rng.randint(2, 4)
        a = rng.randint(6, 30)
        b = a * k
        rel = f"{_TIMES_WORDS[k]} as many {item} as in {m1}"
        lines = [f"In {m2}, {name} sold {_step(f'{a}*{k}', b)} {item}."]
    else:
        a = 2 * rng.randint(5, 45)
        b = a // 2
        rel = f"half as many {item} as in {m1}"
        lines = [f"In {m2}, {name} sold {_step(f'{a}/2', b)} {item}."]
    q = f"{name} sold {a} {item} in {m1}. In {m2}, {he} sold {rel}."
    if rng.random() < 0.5:
        q += f" How many {item} did {name} sell in {m1} and {m2} altogether?"
        total = a + b
        lines.append(f"Altogether, {name} sold {_step(f'{a}+{b}', total)} {item}.")
    else:
        d = rng.randint(2, 20)
        if rng.random() < 0.5 or d >= b:
            c, expr, word = b + d, f"{b}+{d}", "more"
        else:
            c, expr, word = b - d, f"{b}-{d}", "fewer"
        q += (f" In {m3}, {he} sold {d} {word} {item} than in {m2}. How many {item} did {name}"
              f" sell in the three months altogether?")
        total = a + b + c
        lines.append(f"In {m3}, {name} sold {_step(expr, c)} {item}.")
        lines.append(f"Altogether, {name} sold {_step(f'{a}+{b}+{c}', total)} {item}.")
    return q, lines, total


def _gsm_shopping(rng):
    name, he, _, _ = _person(rng)
    i1, i2 = rng.sample(_SHOP_ITEMS, 2)
    n1, n2 = rng.randint(2, 6), rng.randint(2, 6)
    p1, p2 = rng.randint(2, 12), rng.randint(2, 12)
    c1, c2 = n1 * p1, n2 * p2
    s = c1 + c2
    q = f"{name} buys {n1} {i1} for ${p1} each and {n2} {i2} for ${p2} each."
    lines = [f"The {i1} cost {_step(f'{n1}*{p1}', c1, True)}.",
             f"The {i2} cost {_step(f'{n2}*{p2}', c2, True)}.",
             f"{name} spends {_step(f'{c1}+{c2}', s, True)} in total."]
    if rng.random() < 0.6:
        bill = next(b for b in (20, 50, 100, 200, 500) if b > s)
        r = bill - s
        q += f" {_cap(he)} pays with a ${bill} bill. How much change does {he} get?"
        lines.append(f"{_cap(he)} gets {_step(f'{bill}-{s}', r, True)} in change.")
        return q, lines, r
    q += f" How much does {name} spend in total?"
    return q, lines, s


def _gsm_wages(rng):
    name, he, _, _ = _person(rng)
    w, h, d = rng.randint(8, 30), rng.randint(2, 9), rng.randint(2, 7)
    day = w * h
    week = day * d
    q = f"{name} earns ${w} an hour. {_cap(he)} works {h} hours a day, {d} days a week."
    lines = [f"{name} earns {_step(f'{w}*{h}', day, True)} per day.",
             f"In a week, {he} earns {_step(f'{day}*{d}', week, True)}."]
    if rng.random() < 0.5:
        q += f" How much does {he} earn in a week?"
        return q, lines, week
    spend = rng.randint(max(1, week // 10), week // 2)
    left = week - spend
    q += f" {_cap(he)} spends ${spend} each week on food. How much does {he} save each week?"
    lines.append(f"{_cap(he)} saves {_step(f'{week}-{spend}', left, True)} each week.")
    return q, lines, left


def _gsm_share(rng):
    name, he, _, _ = _person(rng)
    item = rng.choice(_SHARE_ITEMS)
    k, each = rng.randint(2, 8), rng.randint(2, 15)
    if rng.random() < 0.5:
        c = k * each
        a = rng.randint(1, c - 1)
        b = c - a
        q = (f"{name} has {a} {item}. {_cap(he)} buys {b} more and shares all of them equally among"
             f" {k} friends. How many {item} does each friend get?")
        lines = [f"{name} has {_step(f'{a}+{b}', c)} {item}.",
                 f"Each friend gets {_step(f'{c}/{k}', each)} {item}."]
        return q, lines, each
    keep = rng.randint(1, 12)
    r = k * each
    c = r + keep
    a = rng.randint(1, c - 1)
    b = c - a
    q = (f"{name} has {a} {item} and buys {b} more. {_cap(he)} keeps {keep} for {'himself' if he == 'he' else 'herself'}"
         f" and shares the rest equally among {k} friends. How many {item} does each friend get?")
    lines = [f"{name} has {_step(f'{a}+{b}', c)} {item}.",
             f"{_cap(he)} shares {_step(f'{c}-{keep}', r)} {item}.",
             f"Each friend gets {_step(f'{r}/{k}', each)} {item}."]
    return q, lines, each


def _gsm_pages(rng):
    name, he, _, _ = _person(rng)
    r, d = rng.randint(4, 20), rng.randint(2, 6)
    read = r * d
    half = rng.random() < 0.5
    rest = 2 * rng.randint(5, 40) if half else rng.randint(5, 120)  # even when it is halved
    pages = read + rest
    q = f"A book has {pages} pages. {name} reads {r} pages a day for {d} days."
    lines = [f"{name} reads {_step(f'{r}*{d}', read)} pages in {d} days.",
             f"There are {_step(f'{pages}-{read}', rest)} pages left."]
    if not half:
        q += f" How many pages does {he} still have to read?"
        return q, lines, rest
    h = rest // 2
    q += f" The next day, {he} reads half of the remaining pages. How many pages are left now?"
    lines.append(f"{_cap(he)} reads half of them, so {_step(f'{rest}/2', h)} pages are left.")
    return q, lines, h


def _gsm_garden(rng):
    name, _, _, _ = _person(rng)
    sg, pl, fruit = rng.choice(_PLANTS)
    rows, per = rng.randint(2, 9), rng.randint(3, 12)
    total = rows * per
    dead = rng.randint(1, total - 1)
    alive = total - dead
    y = rng.randint(2, 9)
    harvest = alive * y
    q = (f"{name} plants {rows} rows of {pl} with {per} {pl} in each row. {dead} of the {pl} do not"
         f" survive. Each remaining {sg} gives {y} {fruit}. How many {fruit} does {name} pick?")
    lines = [f"{name} plants {_step(f'{rows}*{per}', total)} {pl}.",
             f"{_step(f'{total}-{dead}', alive)} {pl} survive.",
             f"{name} picks {_step(f'{alive}*{y}', harvest)} {fruit}."]
    return q, lines, harvest


def _gsm_ages(rng):
    (n1, _), (n2, _), (n3, _) = rng.sample(_GSM_PEOPLE, 3)
    a, k = rng.randint(3, 15), rng.randint(2, 4)
    b = a * k
    d = rng.randint(1, 12)
    if rng.random() < 0.5 and d < b:
        c, expr, word = b - d, f"{b}-{d}", "younger"
    else:
        c, expr, word = b + d, f"{b}+{d}", "older"
    s = a + b + c
    q = (f"{n1} is {a} years old. {n2} is {_TIMES_WORDS[k]} as old as {n1}, and {n3} is {d} years"
         f" {word} than {n2}. What is the sum of their ages?")
    lines = [f"{n2} is {_step(f'{a}*{k}', b)} years old.",
             f"{n3} is {_step(expr, c)} years old.",
             f"The sum of their ages is {_step(f'{a}+{b}+{c}', s)}."]
    return q, lines, s


def _gsm_savings(rng):
    name, he, _, his = _person(rng)
    s, w = rng.randint(5, 40), rng.randint(3, 12)
    m = s * w
    gift = rng.choice(_GIFTS)
    half = rng.random() < 0.5
    if half:
        t = m - 2 * rng.randint(1, (m - 1) // 2)
    else:
        t = rng.randint(1, m - 1)
    r = m - t
    q = f"{name} saves ${s} every week for {w} weeks. Then {he} spends ${t} on a {gift}."
    lines = [f"{name} saves {_step(f'{s}*{w}', m, True)}.",
             f"After buying the {gift}, {he} has {_step(f'{m}-{t}', r, True)} left."]
    if not half:
        q += f" How much money does {he} have left?"
        return q, lines, r
    g = r // 2
    rel = rng.choice(_RELATIVES)
    q += f" {_cap(he)} gives half of the rest to {his} {rel}. How much money does {he} keep?"
    lines.append(f"{_cap(he)} keeps {_step(f'{r}/2', g, True)}.")
    return q, lines, g


def _gsm_bus(rng):
    v = rng.choice(_VEHICLES)
    a = rng.randint(15, 60)
    b = rng.randint(1, a - 1)
    c = rng.randint(1, 30)
    x, y = a - b, a - b + c
    d = rng.randint(1, y - 1)
    z = y - d
    q = (f"A {v} leaves the station with {a} passengers. At the first stop, {b} people get off and {c}"
         f" people get on. At the second stop, {d} people get off. How many passengers are on the {v} now?")
    lines = [f"After {b} people get off, there are {_step(f'{a}-{b}', x)} passengers.",
             f"After {c} people get on, there are {_step(f'{x}+{c}', y)} passengers.",
             f"After the second stop, there are {_step(f'{y}-{d}', z)} passengers."]
    return q, lines, z


def _gsm_boxes(rng):
    item = rng.choice(_SHARE_ITEMS)
    boxes, per = rng.randint(3, 10), rng.randint(5, 15)
    total = boxes * per
    k = rng.randint(2, 3)
    sold1 = rng.randint(1, max(1, (total - 1) // (k + 1)))
    sold2 = sold1 * k
    left = total - sold1 - sold2
    q = (f"A shop has {boxes} boxes of {item}. Each box holds {per} {item}. The shop sells {sold1} {item}"
         f" on Monday and {_TIMES_WORDS[k]} as many on Tuesday. How many {item} are left?")
    lines = [f"The shop has {_step(f'{boxes}*{per}', total)} {item}.",
             f"On Tuesday it sells {_step(f'{sold1}*{k}', sold2)} {item}.",
             f"There are {_step(f'{total}-{sold1}-{sold2}', left)} {item} left."]
    return q, lines, left


def _gsm_fraction(rng):
    word, k = rng.choice(_FRACTIONS)
    n = k * rng.randint(4, 12)
    walk = n // k
    others = n - walk
    bus = rng.randint(1, others - 1)
    bike = others - bus
    q = (f"There are {n} students in a class. {word} of them walk to school, and {bus} of the others"
         f" come by bus. The rest ride a bike. How many students ride a bike?")
    lines = [f"{_step(f'{n}/{k}', walk)} students walk to school.",
             f"{_step(f'{n}-{walk}', others)} students do not walk.",
             f"{_step(f'{others}-{bus}', bike)} students ride a bike."]
    return q, lines, bike


def _gsm_fence(rng):
    name, he, _, _ = _person(rng)
    length, price = rng.randint(4, 30), rng.randint(2, 15)
    width = rng.randint(2, length - 1)
    perimeter = 2 * length + 2 * width
    cost = perimeter * price
    q = (f"{name} wants to put a fence around a garden that is {length} meters long and {width} meters"
         f" wide. The fence costs ${price} per meter. How much will the fence cost?")
    lines = [f"The fence is {_step(f'2*{length}+2*{width}', perimeter)} meters long.",
             f"It costs {_step(f'{perimeter}*{price}', cost, True)}."]
    return q, lines, cost


_GSM_TEMPLATES: tuple[Callable, ...] = (
    _gsm_sales, _gsm_shopping, _gsm_wages, _gsm_share, _gsm_pages, _gsm_garden, _gsm_ages,
    _gsm_savings, _gsm_bus, _gsm_boxes, _gsm_fraction, _gsm_fence,
)


def _gen_gsm8k(rng: random.Random) -> tuple[str, str]:
    question, lines, answer = rng.choice(_GSM_TEMPLATES)(rng)
    lines = [_cap(line) for line in lines]
    return question, "\n".join(lines + [f"#### {answer}"])


_GENERATORS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "mini-xsum": _gen_xsum,
    "mini-europarl": _gen_europarl,
    "mini-gsm8k": _gen_gsm8k,
}


# =============================================================================================
# Embedded tasks: generation and caching
# =============================================================================================


def _check_embedded(name: str) -> None:
    if name not in EMBEDDED_TASKS:
        task_kind(name)  # ValueError for unknown names
        raise ValueError(f"{name!r} is a hub task, not a generated one; use load_task({name!r}, path=...)")


def _example_stream(name: str, seed: int) -> Iterator[tuple[str, str]]:
    rng = random.Random(_derive_seed("kdlib.data", name, seed, GENERATOR_VERSION))
    generate = _GENERATORS[name]
    while True:
        yield generate(rng)


def generate_examples(name: str, n: int, seed: int) -> list[dict]:
    """``n`` examples ``{"id", "source", "target"}`` with distinct sources, deterministic in (name, n, seed).

    Prefix-stable: the first ``m`` examples of ``generate_examples(name, n, seed)`` are
    ``generate_examples(name, m, seed)``. Ids are ``"<name>-<index:06d>"``.
    """
    _check_embedded(name)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    seen: set[str] = set()
    out: list[dict] = []
    budget = 20 * n + 1000  # duplicates are rare; this only guards against an exhausted grammar
    for tries, (source, target) in enumerate(_example_stream(name, seed)):
        if len(out) == n:
            break
        if tries >= budget:
            raise RuntimeError(f"{name}: only {len(out)} distinct sources after {tries} draws (asked {n})")
        if source in seen:
            continue
        seen.add(source)
        out.append({"id": f"{name}-{len(out):06d}", "source": source, "target": target})
    return out


def generate_embedded(name: str, n_train: int, n_dev: int, n_test: int, seed: int) -> datasets.DatasetDict:
    """Splits "train"/"dev"/"test" of an embedded task; no source appears in two splits.

    Test takes the first ``n_test`` distinct examples of the seed's stream, dev the next
    ``n_dev``, train the rest, so the test set does not change when only ``n_train`` does.
    Ids: ``"<name>-<split>-<index:06d>"``.
    """
    _check_embedded(name)
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    for split, n in sizes.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n_{split} must be a non-negative int, got {n!r}")
    examples = generate_examples(name, n_train + n_dev + n_test, seed)
    bounds = {"test": (0, n_test), "dev": (n_test, n_test + n_dev), "train": (n_test + n_dev, len(examples))}
    out = {}
    for split in SPLITS:
        lo, hi = bounds[split]
        rows = [{"id": f"{name}-{split}-{i:06d}", "source": e["source"], "target": e["target"]}
                for i, e in enumerate(examples[lo:hi])]
        out[split] = datasets.Dataset.from_list(rows, features=FEATURES) if rows else _empty()
    return datasets.DatasetDict(out)


def _empty() -> datasets.Dataset:
    return datasets.Dataset.from_dict({"id": [], "source": [], "target": []}, features=FEATURES)


def _atomic_write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; the cache is plain data
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _cache_folder(cache_dir, name: str, sizes: dict, seed: int) -> tuple[str, dict]:
    key = {"name": name, **{f"n_{s}": sizes[s] for s in SPLITS}, "seed": seed,
           "generator_version": GENERATOR_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(os.fspath(cache_dir), "data", f"{name}-{digest}"), key


def _read_cached(folder: str, key: dict) -> datasets.DatasetDict | None:
    """The cached task, or None when the folder is incomplete or does not match ``key``."""
    try:
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("key") != key:
            return None
        out = {}
        for split in SPLITS:
            with open(os.path.join(folder, f"{split}.jsonl"), encoding="utf-8") as f:
                text = f.read()
            if hashlib.sha256(text.encode()).hexdigest() != meta["sha256"][split]:
                return None
            rows = [json.loads(line) for line in text.splitlines() if line]
            out[split] = datasets.Dataset.from_list(rows, features=FEATURES) if rows else _empty()
        return datasets.DatasetDict(out)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(folder: str, key: dict, dd: datasets.DatasetDict) -> None:
    os.makedirs(folder, exist_ok=True)
    meta_path = os.path.join(folder, "meta.json")
    try:  # stale or corrupt: un-mark the folder before touching the splits
        os.unlink(meta_path)
    except FileNotFoundError:
        pass
    digests, counts = {}, {}
    for split in SPLITS:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in dd[split].to_list())
        _atomic_write(os.path.join(folder, f"{split}.jsonl"), text)
        digests[split] = hashlib.sha256(text.encode()).hexdigest()
        counts[split] = len(dd[split])
    meta = {"key": key, "sizes": counts, "sha256": digests, "columns": list(FEATURES)}
    _atomic_write(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")  # last: marks completion


def _load_embedded(name, cache_dir, path, n_train, n_dev, n_test, seed) -> datasets.DatasetDict:
    if path is not None:
        raise ValueError(f"{name!r} is generated, so it takes no path (got path={path!r})")
    defaults = dict(zip(SPLITS, DEFAULT_SIZES[name]))
    sizes = {s: (n if n is not None else defaults[s]) for s, n in zip(SPLITS, (n_train, n_dev, n_test))}
    folder, key = _cache_folder(cache_dir, name, sizes, seed)
    cached = _read_cached(folder, key)
    if cached is not None:
        return cached
    dd = generate_embedded(name, sizes["train"], sizes["dev"], sizes["test"], seed)
    _write_cache(folder, key, dd)
    return dd


# =============================================================================================
# Hub tasks: XSum, Europarl EN-NL, GSM8K from the hub or from local files in the hub schema
# =============================================================================================

_BUILDERS = ((".jsonl.gz", "json"), (".json.gz", "json"), (".jsonl", "json"), (".json", "json"),
             (".parquet", "parquet"), (".csv.gz", "csv"), (".csv", "csv"), (".arrow", "arrow"))
_SPLIT_PATTERNS = (
    ("test", re.compile(r"(^|[^a-z])(test|testing)([^a-z]|$)")),
    ("dev", re.compile(r"(^|[^a-z])(validation|valid|val|dev)([^a-z]|$)")),
    ("train", re.compile(r"(^|[^a-z])(train|training)([^a-z]|$)")),
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_SPLITS = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}


def _builder_of(path: str) -> str | None:
    low = path.lower()
    for ext, builder in _BUILDERS:
        if low.endswith(ext):
            return builder
    return None


def _looks_local(path: str) -> bool:
    """True for strings that can only be a filesystem path (not a hub ``org/name``)."""
    return (path.startswith(("/", ".", "~", "\\")) or os.sep in path.replace("/", "") or
            not _HUB_ID.match(path) or _builder_of(path) is not None or path.count("/") > 1)


def _local_split_files(path: str, config: str | None) -> tuple[dict[str, list[str]], str]:
    """Data files of a local path by split ("train"/"dev"/"test"), and the datasets builder."""
    if os.path.isdir(path):
        root = path
        if config and os.path.isdir(os.path.join(path, config)):  # hub layout: <config>/<split>-*.parquet
            root = os.path.join(path, config)
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [os.path.join(dirpath, f) for f in sorted(filenames)
                      if not f.startswith(".") and _builder_of(f) is not None]
        rel = {f: os.path.relpath(f, root) for f in files}
    elif os.path.isfile(path):
        files, rel = [path], {path: os.path.basename(path)}
    else:
        files = sorted(f for f in glob.glob(path) if os.path.isfile(f) and _builder_of(f))
        rel = {f: os.path.basename(f) for f in files}
    if not files:
        raise FileNotFoundError(f"no data files (.jsonl/.json/.parquet/.csv) found at {path!r}")
    builders = {_builder_of(f) for f in files}
    if len(builders) > 1:
        raise ValueError(f"{path!r} mixes data formats ({', '.join(sorted(builders))}); keep one format")
    by_split: dict[str, list[str]] = {}
    unassigned = []
    for f in files:
        name = rel[f].lower()
        split = next((s for s, pattern in _SPLIT_PATTERNS if pattern.search(name)), None)
        if split is None:
            unassigned.append(f)
        else:
            by_split.setdefault(split, []).append(f)
    if unassigned:
        if by_split:
            raise ValueError(f"cannot tell the split of {unassigned} under {path!r}: name files"
                             " train/validation/test (e.g. train.jsonl, validation.jsonl, test.jsonl)")
        by_split["train"] = unassigned  # one unnamed file (or several): all of it is train
    return by_split, builders.pop()


def _read_raw(name: str, source: str, config: str | None, cache_dir) -> dict[str, tuple[datasets.Dataset, str]]:
    """Raw splits ``{split: (dataset in the hub schema, where it came from)}``."""
    hf_cache = os.path.join(os.fspath(cache_dir), "hf-datasets")
    local = os.path.expanduser(source)
    if os.path.exists(local) or (glob.has_magic(local) and glob.glob(local)):
        by_split, builder = _local_split_files(local, config)
        out = {}
        for split, files in by_split.items():
            origin = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"
            try:
                ds = datasets.load_dataset(builder, data_files={"train": files}, split="train", cache_dir=hf_cache)
            except Exception as e:  # malformed file: say which one
                raise ValueError(f"could not read {origin} as {builder}: {e}") from e
            out[split] = (ds, origin)
        return out
    if _looks_local(source):
        raise FileNotFoundError(f"data path for task {name!r} does not exist: {source!r}")
    try:
        try:
            dd = datasets.load_dataset(source, config, cache_dir=hf_cache)
        except RuntimeError as e:
            if "script" not in str(e).lower():
                raise
            # A repository that still ships a loading script (no longer run by `datasets`, and
            # never with trust_remote_code here): read the hub's own Parquet conversion instead.
            dd = datasets.load_dataset(source, config, cache_dir=hf_cache, revision="refs/convert/parquet")
    except Exception as e:
        error = ConnectionError if isinstance(e, OSError) else RuntimeError  # ConnectionError is an OSError
        raise error(
            f"could not load {source!r} (config {config!r}) for task {name!r} from the Hugging Face hub"
            f" ({type(e).__name__}: {e}). No local path {source!r} exists either. If the hub is"
            f" unreachable (offline), pass path=<a local directory or file in the hub's schema>."
        ) from e
    return {_HUB_SPLITS[s]: (ds, f"{source}[{s}]") for s, ds in dd.items() if s in _HUB_SPLITS}


def _to_source_target(name: str, split: str, ds: datasets.Dataset, origin: str) -> datasets.Dataset:
    """Map one raw split to columns id/source/target, checking the schema."""
    def require(column: str) -> None:
        if column not in ds.column_names:
            raise ValueError(f"{origin}: missing required field {column!r} for task {name!r}"
                             f" (columns: {ds.column_names})")

    if name == "xsum":
        require("document")
        require("summary")
        src, tgt = "document", "summary"
    elif name == "gsm8k":
        require("question")
        require("answer")
        src, tgt = "question", "answer"
    else:  # europarl: {"translation": {"en": ..., "nl": ...}}
        require("translation")
        feature = ds.features["translation"]
        if not isinstance(feature, dict):
            raise ValueError(f"{origin}: field 'translation' must be an object with 'en' and 'nl'"
                             f" (got {feature})")
        for lang in ("en", "nl"):
            if lang not in feature:
                raise ValueError(f"{origin}: missing required field 'translation.{lang}' for task {name!r}")
        ds = ds.flatten()
        src, tgt = "translation.en", "translation.nl"

    keep_id = name == "xsum" and "id" in ds.column_names
    ds = ds.select_columns([c for c in (("id",) if keep_id else ()) + (src, tgt)])
    ds = ds.rename_columns({src: "source", tgt: "target"})
    if keep_id:
        if ds.features["id"] != datasets.Value("string"):
            ds = ds.cast_column("id", datasets.Value("string"))
    else:
        ds = ds.add_column("id", [f"{name}-{split}-{i:07d}" for i in range(len(ds))])
    for column in ("source", "target"):
        if ds.features[column] != datasets.Value("string"):
            ds = ds.cast_column(column, datasets.Value("string"))
    # Rows with a null source/target cannot be used; drop them and say so.
    valid = np.ones(len(ds), dtype=bool)
    for column in ("id", "source", "target"):
        col = ds.data.column(column)
        if col.null_count:
            valid &= ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if not valid.all():
        warnings.warn(f"{origin}: dropping {int((~valid).sum())} rows with an empty id/source/target", stacklevel=3)
        ds = ds.select(np.flatnonzero(valid))
    return ds.select_columns(["id", "source", "target"])


def _permutation(n: int, *key: object) -> np.ndarray:
    return np.random.default_rng(_derive_seed("kdlib.data", *key)).permutation(n)


def _default_carve_size(name: str, split: str, n_rows: int) -> int:
    """The paper's size of a split carved from train, scaled down for a small file."""
    paper = PAPER_SPLIT_SIZES[name]
    carved = [s for s in ("dev", "test") if s in _CARVED[name]]
    pool = paper["train"] + sum(paper[s] for s in carved)  # the paper's train before carving
    return min(paper[split], max(1, round(n_rows * paper[split] / pool)))


# Splits the hub lacks and that are carved from train (seed 000, Sec. 3.1 / Table 3).
_CARVED = {"xsum": (), "europarl": ("dev", "test"), "gsm8k": ("dev",)}


def _load_hub(name, cache_dir, path, n_train, n_dev, n_test, seed) -> datasets.DatasetDict:
    hub_name, config = HUB_SOURCES[name]
    source = hub_name if path is None else os.fspath(path)
    raw = _read_raw(name, source, config, cache_dir)
    if "train" not in raw:
        raise ValueError(f"{source!r}: no train split found for task {name!r} (splits: {sorted(raw)})")
    splits = {s: _to_source_target(name, s, ds, origin) for s, (ds, origin) in raw.items()}
    asked = {"train": n_train, "dev": n_dev, "test": n_test}
    for s, n in asked.items():
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise ValueError(f"n_{s} must be a non-negative int or None, got {n!r}")

    # Carve the missing splits out of train: one seeded permutation, test first, then dev.
    missing = [s for s in ("test", "dev") if s not in splits]
    if missing:
        train, origin = splits["train"], raw["train"][1]
        sizes = {}
        for s in missing:
            if asked[s] is not None:
                sizes[s] = asked[s]
            else:
                sizes[s] = _default_carve_size(name, s, len(train))
                if sizes[s] < PAPER_SPLIT_SIZES[name][s]:
                    warnings.warn(f"{name}: {origin} has {len(train)} train rows; carving {s}={sizes[s]}"
                                  f" (paper: {PAPER_SPLIT_SIZES[name][s]})", stacklevel=3)
        need = sum(sizes.values()) + max(1, n_train or 0)
        if need > len(train):
            raise ValueError(
                f"{origin} has {len(train)} rows, too few to carve "
                + ", ".join(f"n_{s}={sizes[s]}" for s in missing)
                + f" and keep n_train={max(1, n_train or 0)}; pass smaller n_dev/n_test")
        perm = _permutation(len(train), name, seed, "carve")
        start = 0
        for s in missing:
            splits[s] = train.select(perm[start:start + sizes[s]])
            start += sizes[s]
            asked[s] = None  # already exactly the asked size
        splits["train"] = train.select(perm[start:])

    # Subsample: the first n after a seeded shuffle.
    for s in SPLITS:
        n = asked[s]
        if n is None:
            continue
        if n > len(splits[s]):
            raise ValueError(f"{name}: asked n_{s}={n} but the {s} split has only {len(splits[s])} rows")
        splits[s] = splits[s].select(_permutation(len(splits[s]), name, seed, "subsample", s)[:n])
    return datasets.DatasetDict({s: splits[s] for s in SPLITS})


# =============================================================================================
# Entry point
# =============================================================================================


def load_task(name: str, *, cache_dir, path: str | None = None, n_train: int | None = None,
              n_dev: int | None = None, n_test: int | None = None, seed: int = 0) -> datasets.DatasetDict:
    """A task as splits "train"/"dev"/"test" with columns id/source/target.

    Embedded tasks are generated (sizes default to ``DEFAULT_SIZES``) and cached as JSONL under
    ``cache_dir/data/<name>-<hash>/``. Hub tasks are read from ``path`` (a local directory/file/glob
    in the hub's schema, or a hub dataset name; default ``HUB_SOURCES[name]``); ``n_*`` subsample
    the first n rows after a shuffle seeded by ``seed``, which also seeds the carved splits.
    """
    task_kind(name)
    if name in EMBEDDED_TASKS:
        return _load_embedded(name, cache_dir, path, n_train, n_dev, n_test, seed)
    return _load_hub(name, cache_dir, path, n_train, n_dev, n_test, seed)
