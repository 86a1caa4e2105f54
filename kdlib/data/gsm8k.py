"""mini-gsm8k: multi-step word problems in GSM8K's solution format.

2-4 step problems whose solutions use GSM8K's own format, one worded step per line with a
calculator annotation (``... 48/2 = <<48/2=24>>24 clips ...``) and a final ``#### 72`` line. All
results are integers by construction.
"""

from __future__ import annotations

import random
from typing import Callable

from kdlib.data.common import _cap

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
