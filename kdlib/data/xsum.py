"""mini-xsum: abstractive one-sentence summaries of generated news stories.

A 3-6 sentence news-like document about one event (main actor, event, place, time) padded with
distractors (quotes, background, a rival actor's event last year); the target is one
*abstractive* headline-style sentence (actor shortened, event verb paraphrased through a
lexicon, place folded in), never a substring of the document.
"""

from __future__ import annotations

import random

from kdlib.data.common import _a, _cap
from kdlib.data.lexicons import XSUM_LEXICON
from kdlib.data.variants import Alt, Lit, Node, Seq, alt, canonical, lexical

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
        "vps": (
            "unveils plans for a new {infra}", "reveals plans for a new {infra}",
            "announces plans to build a new {infra}", "sets out plans for a new {infra}", "proposes a new {infra}",
        ),
        "place": ("The new {infra} will be built in {P}.", "The {infra} is planned for a site in {P}."),
        "why": (("to ease traffic congestion", "to tackle congestion"), ("to attract more visitors", "in bid to draw visitors")),
        "slots": ("infra",),
    },
    {
        "doc": ("officially opened the new {infra}", "opened a new {infra}"),
        "sum": "New {infra} for {P} opened by {A}.",
        "vps": (
            "opens new {infra}", "officially opens a new {infra}", "unveils a new {infra}",
            "cuts the ribbon on a new {infra}",
        ),
        "place": ("The {infra} is located in {P}.", "The opening ceremony took place in {P}."),
        "why": (("after two years of building work", "after lengthy works"), ("ahead of the summer holidays", "ahead of summer")),
        "slots": ("infra",),
    },
    {
        "doc": ("decided to close the {infra}", "confirmed that the {infra} would close"),
        "sum": "{A} confirms closure of {infra} in {P}.",
        "vps": (
            "confirms closure of {infra}", "is to close the {infra}", "shuts the {infra}",
            "announces the closure of the {infra}", "decides to close the {infra}",
        ),
        "place": ("The {infra} is in {P}.", "The {infra} has served {P} for {k} years."),
        "why": (("citing rising costs", "over rising costs"), ("because of falling visitor numbers", "as visitor numbers fall")),
        "slots": ("infra", "k"),
    },
    {
        "doc": ("voted to ban {banned} from the town centre", "introduced a ban on {banned}"),
        "sum": "{Banned} outlawed in {P} by {A}.",
        "vps": (
            "bans {banned} from the town centre", "votes to ban {banned}", "outlaws {banned}",
            "introduces a ban on {banned}",
        ),
        "place": ("The ban will apply in {P}.", "The new rules will cover {P}."),
        "why": (("after complaints from residents", "following complaints"), ("to improve safety", "in safety drive")),
        "slots": ("banned",),
    },
    {
        "doc": ("agreed to cut funding for {service}", "approved a reduction in spending on {service}"),
        "sum": "{A} slashes {service} budget in {P}.",
        "vps": (
            "slashes {service} budget", "cuts funding for {service}", "agrees cuts to {service}",
            "reduces spending on {service}",
        ),
        "place": ("The cuts will affect {P}.", "Residents in {P} will be most affected."),
        "why": (("to save money", "to save cash"), ("citing a gap in its budget", "to plug budget gap")),
        "slots": ("service",),
    },
    {
        "doc": ("agreed to raise {fee} by {pct} percent", "said {fee} would go up by {pct} percent"),
        "sum": "{A} approves {pct}% rise in {fee} for {P}.",
        "vps": (
            "approves {pct}% rise in {fee}", "raises {fee} by {pct}%", "agrees a {pct} percent increase in {fee}",
            "puts up {fee} by {pct} percent",
        ),
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
        "vps": (
            "backs {m}m pound boost for {service}", "approves {m} million pounds for {service}",
            "commits {m}m pounds to {service}", "agrees {m}m pound spending on {service}",
        ),
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
        "vps": (
            "opens new {facility}", "opens a new {facility}", "unveils a new {facility}",
            "launches a new {facility}",
        ),
        "place": ("The {facility} is in {P}.", "The new site is located in {P}."),
        "why": (("to meet growing demand", "to keep up with demand"), ("after a record year", "after bumper year")),
        "slots": ("facility",),
    },
    {
        "doc": ("announced that it would close its {facility}", "said it planned to close its {facility}"),
        "sum": "{A} confirms plans to shut its {P} {facility}.",
        "vps": (
            "confirms plans to shut its {facility}", "is to close its {facility}",
            "announces the closure of its {facility}", "plans to shut its {facility}",
        ),
        "place": ("The {facility} is in {P}.", "The site in {P} has been open for {k} years."),
        "why": (("citing weak demand", "amid weak demand"), ("after a fall in sales", "as sales slump")),
        "slots": ("facility", "k"),
    },
    {
        "doc": ("said it would cut {n} jobs at its {facility}", "announced plans to cut {n} jobs at its {facility}"),
        "sum": "{n} jobs to go at {A} {facility} in {P}.",
        "vps": (
            "is to cut {n} jobs at its {facility}", "axes {n} jobs at its {facility}",
            "announces {n} job cuts at its {facility}", "plans {n} job losses at its {facility}",
        ),
        "place": ("The {facility} is in {P}.", "The affected site is in {P}."),
        "why": (("citing weak demand", "amid weak demand"), ("after a fall in sales", "as sales slump")),
        "slots": ("facility", "n"),
    },
    {
        "doc": ("said it would hire {n} new workers", "announced plans to take on {n} staff"),
        "sum": "{A} to create {n} jobs in {P}.",
        "vps": (
            "is to create {n} jobs", "is to hire {n} new workers", "announces {n} new jobs",
            "plans to take on {n} staff",
        ),
        "place": ("The new staff will work in {P}.", "The jobs will be based in {P}."),
        "why": (("to meet growing demand", "to keep up with demand"), ("after a record year", "after bumper year")),
        "slots": ("n",),
    },
    {
        "doc": ("recalled thousands of its {product}", "asked customers to return its {product}"),
        "sum": "{A} pulls {product} from shops in {P}.",
        "vps": (
            "pulls {product} from shops", "recalls thousands of {product}", "issues a recall of its {product}",
            "asks customers to return its {product}",
        ),
        "place": ("The problem was first reported in {P}.", "Most of the products were sold in {P}."),
        "why": (("over safety concerns", "amid safety fears"), ("after customers reported problems", "after complaints")),
        "slots": ("product",),
    },
    {
        "doc": ("launched a new range of {product}", "started selling a new line of {product}"),
        "sum": "{A} unveils new {product} in {P}.",
        "vps": (
            "unveils new {product}", "launches a new range of {product}", "starts selling new {product}",
            "brings out a new line of {product}",
        ),
        "place": ("The launch event was held in {P}.", "The products will first go on sale in {P}."),
        "why": (("to attract younger customers", "to lure younger buyers"), ("after a record year", "after bumper year")),
        "slots": ("product",),
    },
    {
        "doc": ("signed a deal with {other}", "agreed a partnership with {other}"),
        "sum": "{A} strikes deal with {other} in {P}.",
        "vps": (
            "strikes deal with {other}", "signs a deal with {other}", "agrees a partnership with {other}",
            "teams up with {other}",
        ),
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
        "vps": (
            "clinch {cup} after beating {other}", "win the {cup} with a {s1}-{s2} victory over {other}",
            "beat {other} {s1}-{s2} to lift the {cup}", "lift the {cup} after a {s1}-{s2} win over {other}",
        ),
        "place": ("The final was played in {P}.", "The match took place in {P}."),
        "why": (("in front of a record crowd", "before record crowd"), ("after a penalty shootout", "on penalties")),
        "slots": ("other", "score", "cup"),
    },
    {
        "doc": ("lost {s1}-{s2} to {other} in the {cup} final", "were beaten {s1}-{s2} by {other} in the {cup} final"),
        "sum": "{Other} beat {A} to lift {cup} in {P}.",
        "vps": (
            "lose {cup} final to {other}", "are beaten {s1}-{s2} by {other} in the {cup} final",
            "lose {s1}-{s2} to {other} in the {cup} final", "miss out on the {cup} after defeat to {other}",
        ),
        "place": ("The final was played in {P}.", "The match took place in {P}."),
        "why": (("after a penalty shootout", "on penalties"), ("in front of a record crowd", "before record crowd")),
        "slots": ("other", "score", "cup"),
    },
    {
        "doc": ("revealed plans for a new stadium", "announced plans to build a new ground"),
        "sum": "{A} unveil stadium plans for {P}.",
        "vps": (
            "unveil stadium plans", "reveal plans for a new stadium", "announce plans to build a new ground",
            "set out plans for a new stadium",
        ),
        "place": ("The stadium would be built in {P}.", "The club has bought land in {P}."),
        "why": (("to increase capacity", "to boost capacity"), ("after years of sharing a ground", "to end groundshare")),
        "slots": (),
    },
    {
        "doc": ("opened a new training academy", "opened a youth academy for young players"),
        "sum": "{A} launch youth academy in {P}.",
        "vps": (
            "launch youth academy", "open a new training academy", "open a youth academy for young players",
            "set up a youth academy",
        ),
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
# Salient facts a summary may add when their sentence is in the document (content selection):
# sentence template -> the clause a summary appends.
_FACT_CLAUSES = {
    "The plan was first discussed {k} years ago.": ", a plan first discussed {k} years ago",
    "Local elections are due to take place next year.": " ahead of local elections next year",
    "{A} was founded in {year} and employs about {emp} people.": ", which employs about {emp} people",
    "Shares in {A} rose by {pct} percent.": ", sending its shares up {pct} percent",
    "The company has struggled with rising costs.": " after struggling with rising costs",
    "More than {crowd} fans attended the match.": " in front of more than {crowd} fans",
    "Work is expected to begin next spring.": ", with work due to begin next spring",
    "Residents can comment at a public meeting next month.": ", with a public meeting due next month",
    "A final vote is expected in the autumn.": " ahead of a final vote in the autumn",
    "Union leaders said they would seek talks.": ", with unions seeking talks",
    "The changes are expected to take effect next year.": ", with the changes due next year",
    "Fans celebrated in the streets after the match.": ", sparking celebrations in the streets",
    "The manager praised the players after the game.": ", with the manager praising the players",
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
        return full, name, {"products": products, "industry": industry}
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
    """(document, summary) at ambiguity 0: the canonical summary."""
    document, node = _gen_xsum_node(rng)
    return document, canonical(node)


def _gen_xsum_node(rng: random.Random) -> tuple[str, Node]:
    """(document, the distribution of its valid summaries); draws from ``rng`` exactly as ``_gen_xsum``."""
    while True:  # keep documents at 38-90 words
        document, node = _xsum_story(rng)
        if 38 <= len(document.split()) <= 90:
            return document, node


def _actor_names(kind: str, full: str, short: str, extra: dict, town: str) -> list[str]:
    """Ways a summary may name the main actor (first: the short name of the canonical summary)."""
    if kind == "council":
        return [short, full]
    if kind == "company":
        industry = extra["industry"]
        return [short, f"the {industry} company {short}", f"{short}, {_a(industry)} {industry} firm based in {town},"]
    return [short, f"the football club {short}"]


def _summary_node(summary: str, event: dict, fill: dict, names: list[str], time: str, why: tuple[str, str],
                  facts: list[str]) -> Node:
    """Every valid summary of one story: the canonical headline (option 0), or a sentence built from
    a frame (present-tense headline, past tense as the document words it, time or place fronted),
    one way of naming the actor, one event phrase, optionally the time, the reason (either wording,
    or left out when the document gives one) and at most one salient fact from the document."""
    place = alt(fill["P"], f"the town of {fill['P']}")
    present = alt(*(v.format(**fill) for v in event["vps"]))
    past = alt(*(d.format(**fill) for d in event["doc"]))
    actor = alt(*names)
    actor_cap = alt(*(_cap(n) for n in names))
    why_sum, why_doc = why
    reason = Alt([f" {why_sum}", f" {why_doc}", ""]) if why_sum else Lit("")
    # none, one, or two of the document's salient facts (in either order)
    fact = Alt([""] + facts + [Seq(f, g) for i, f in enumerate(facts) for j, g in enumerate(facts) if i != j]) if facts else Lit("")
    when = Alt(["", f" {time}"])
    frames = [
        Lit(summary),
        Seq(actor_cap, " ", present, " in ", place, when, reason, fact, "."),
        Seq(actor_cap, " ", past, Alt([Seq(" in ", place, f" {time}"), Seq(f" {time} in ", place), Seq(" in ", place)]),
            reason, fact, "."),
        Seq(f"{_cap(time)}, ", actor, " ", past, " in ", place, reason, fact, "."),
        Seq("In ", place, ", ", actor, " ", present, when, reason, fact, "."),
    ]
    return Alt(frames)


def _xsum_story(rng: random.Random) -> tuple[str, Node]:
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
    why_pair = (why_sum, why_doc)
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
    bg_templates = rng.sample(_BACKGROUND[kind], 2)
    backgrounds = [b.format(**bg_fill) for b in bg_templates]
    while True:  # a rival whose name does not start like the main actor's
        rival_full, rival_short, rival_extra = _xsum_actor(rng, kind, towns[2])
        if rival_short.split()[0] != short.split()[0]:
            break
    rival_event = rng.choice([e for e in events if e is not event])
    rival_slots = _xsum_slots(rng, kind, rival_event["slots"], rival_full, rival_extra, [towns[4]])
    rival = f"Last year, {rival_full} {rng.choice(rival_event['doc']).format(**rival_slots)} in {towns[3]}."
    ending = rng.choice(_ENDINGS[kind])
    pool = [quote_sentence, backgrounds[0], backgrounds[1], rival, ending]
    clauses = {backgrounds[0]: bg_templates[0], backgrounds[1]: bg_templates[1], ending: ending}
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
    facts = [_FACT_CLAUSES[clauses[d]].format(**bg_fill) for d in distractors
             if d in clauses and clauses[d] in _FACT_CLAUSES]
    names = _actor_names(kind, full, short, extra, home)
    return document, lexical(_summary_node(summary, event, fill, names, time, why_pair, facts), XSUM_LEXICON)
