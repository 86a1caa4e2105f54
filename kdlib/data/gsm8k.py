"""mini-gsm8k: multi-step word problems in GSM8K's solution format.

2-4 step problems whose solutions use GSM8K's own format, one worded step per line with a
calculator annotation (``... 48/2 = <<48/2=24>>24 clips ...``) and a final ``#### 72`` line. All
results are integers by construction.

Each problem family is a template function of a :class:`Draws`, which makes every free choice
(names, items, branches, quantities). mini-gsm8k draws through the base class, which calls the
task's ``random.Random`` exactly as plain calls would; the held-out evaluation sets
(``kdlib.data.gsm_eval``) subclass it to use unseen names, replay a problem with some quantities
changed, reword it (``paraphrase``) or force its longest branch, without touching mini-gsm8k's
own output.
"""

from __future__ import annotations

import itertools
import random
import re
from typing import Callable

from kdlib.data.common import _cap
from kdlib.data.lexicons import GSM8K_LEXICON
from kdlib.data.variants import Alt, Lit, Node, Seq, lexical

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


# Names never drawn by mini-gsm8k (nor by mini-xsum): the GSM-Symbolic-style set re-instantiates the
# templates with these. Spelled with letters the training corpus already uses (no Q or X).
HELDOUT_PEOPLE = (
    ("Alma", "she"), ("Boris", "he"), ("Cleo", "she"), ("Dario", "he"), ("Edith", "she"),
    ("Finn", "he"), ("Greta", "she"), ("Hank", "he"), ("Irene", "she"), ("Jasper", "he"),
    ("Lola", "she"), ("Milo", "he"), ("Nora", "she"), ("Otto", "he"), ("Petra", "she"),
    ("Ravi", "he"), ("Sofia", "she"), ("Tobias", "he"), ("Una", "she"), ("Vince", "he"),
    ("Wanda", "she"), ("Yusuf", "he"), ("Zoe", "she"), ("Gus", "he"), ("Hazel", "she"),
    ("Kurt", "he"), ("Daisy", "she"), ("Nils", "he"), ("Flora", "she"), ("Eli", "he"),
    ("Beth", "she"), ("Carl", "he"), ("Jade", "she"), ("Luis", "he"), ("Rita", "she"), ("Walt", "he"),
)


class Draws:
    """Every free choice of a template, drawn from ``rng``.

    The base class is mini-gsm8k's own generator: each method calls ``rng`` exactly as the plain
    call in its comment would, so the task's output is fixed by its seed. The kinds tell the
    evaluation sets what a draw means:

    - ``qty(lo, hi)``: a quantity of the problem with fixed bounds (``rng.randint``); ``expand=False``
      marks one that cannot grow by a digit and stay sensible (hours a day, days a week, ages);
    - ``money(lo, hi)``: a price, wage or saving in dollars (``rng.randint``), which may become a
      decimal;
    - ``part(lo, hi)``: a quantity bounded by earlier ones (``rng.randint``);
    - ``pick(lo, hi)``: a structural integer such as the k of "k times as many" (``rng.randint``);
    - ``coin(p, longer)``: a branch (``rng.random() < p``); ``longer`` says which outcome gives
      the longer problem (None: neither);
    - ``choice``/``sample``/``randrange``, ``person()``/``persons(k)``: items and names.

    ``paraphrase`` (False here) asks a template for its reworded question (same numbers, same
    solution).
    """

    people: tuple[tuple[str, str], ...] = _GSM_PEOPLE
    paraphrase = False

    def __init__(self, rng: random.Random):
        self.rng = rng

    def choice(self, seq):
        return self.rng.choice(seq)

    def sample(self, seq, k: int) -> list:
        return self.rng.sample(seq, k)

    def randrange(self, n: int) -> int:
        return self.rng.randrange(n)

    def coin(self, p: float, longer: bool | None = None) -> bool:
        return self.rng.random() < p

    def pick(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def qty(self, lo: int, hi: int, expand: bool = True) -> int:
        return self.rng.randint(lo, hi)

    def money(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def part(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def person(self) -> tuple[str, str, str, str]:
        """(name, he/she, him/her, his/her)."""
        name, he = self.choice(self.people)
        him, his = ("him", "his") if he == "he" else ("her", "her")
        return name, he, him, his

    def persons(self, k: int) -> list[tuple[str, str]]:
        return self.sample(self.people, k)


def _step(expr: str, value, dollar: bool = False) -> str:
    """``expr = <<expr=value>>value`` (GSM8K's calculator annotation); ``$`` before money."""
    d = "$" if dollar else ""
    return f"{expr} = {d}<<{expr}={value}>>{value}"


# Every template takes a Draws ``dr`` and returns (question, solution lines, answer). The draws'
# order is part of mini-gsm8k's output (pinned by tests/test_data.py): add new draws only inside
# ``if dr.paraphrase`` (which draws nothing) or in a new template.


def _gsm_sales(dr):
    name, he, _, _ = dr.person()
    item = dr.choice(_SELL_ITEMS)
    i = dr.randrange(len(_MONTHS) - 2)
    m1, m2, m3 = _MONTHS[i:i + 3]
    if dr.coin(0.5):
        k = dr.pick(2, 4)
        a = dr.qty(6, 30)
        b = a * k
        rel = f"{_TIMES_WORDS[k]} as many {item} as in {m1}"
        lines = [f"In {m2}, {name} sold {_step(f'{a}*{k}', b)} {item}."]
    else:
        a = 2 * dr.qty(5, 45)
        b = a // 2
        rel = f"half as many {item} as in {m1}"
        lines = [f"In {m2}, {name} sold {_step(f'{a}/2', b)} {item}."]
    if dr.paraphrase:
        q = f"{name} sold {a} {item} in {m1}, and in {m2} {he} sold {rel}."
    else:
        q = f"{name} sold {a} {item} in {m1}. In {m2}, {he} sold {rel}."
    if dr.coin(0.5, longer=False):
        if dr.paraphrase:
            q += f" How many {item} did {name} sell in total in {m1} and {m2}?"
        else:
            q += f" How many {item} did {name} sell in {m1} and {m2} altogether?"
        total = a + b
        lines.append(f"Altogether, {name} sold {_step(f'{a}+{b}', total)} {item}.")
    else:
        diff = dr.qty(2, 20)
        if dr.coin(0.5) or diff >= b:
            c, expr, word = b + diff, f"{b}+{diff}", "more"
        else:
            c, expr, word = b - diff, f"{b}-{diff}", "fewer"
        if dr.paraphrase:
            q += (f" {_cap(he)} sold {diff} {word} {item} in {m3} than in {m2}. How many {item} did {he}"
                  f" sell in total in the three months?")
        else:
            q += (f" In {m3}, {he} sold {diff} {word} {item} than in {m2}. How many {item} did {name}"
                  f" sell in the three months altogether?")
        total = a + b + c
        lines.append(f"In {m3}, {name} sold {_step(expr, c)} {item}.")
        lines.append(f"Altogether, {name} sold {_step(f'{a}+{b}+{c}', total)} {item}.")
    return q, lines, total


_BILLS = (20, 50, 100, 200, 500) + tuple(m * 10 ** e for e in range(3, 9) for m in (1, 2, 5))


def _gsm_shopping(dr):
    name, he, _, his = dr.person()
    i1, i2 = dr.sample(_SHOP_ITEMS, 2)
    n1, n2 = dr.qty(2, 6), dr.qty(2, 6)
    p1, p2 = dr.money(2, 12), dr.money(2, 12)
    c1, c2 = n1 * p1, n2 * p2
    s = c1 + c2
    if dr.paraphrase:
        q = (f"{name} buys {n1} {i1} and {n2} {i2}. Each of the {i1} costs ${p1} and each of the {i2}"
             f" costs ${p2}.")
    else:
        q = f"{name} buys {n1} {i1} for ${p1} each and {n2} {i2} for ${p2} each."
    lines = [f"The {i1} cost {_step(f'{n1}*{p1}', c1, True)}.",
             f"The {i2} cost {_step(f'{n2}*{p2}', c2, True)}.",
             f"{name} spends {_step(f'{c1}+{c2}', s, True)} in total."]
    if dr.coin(0.6, longer=True):
        bill = next(b for b in _BILLS if b > s)
        r = bill - s
        if dr.paraphrase:
            q += f" {_cap(he)} pays with a ${bill} bill. What is {his} change?"
        else:
            q += f" {_cap(he)} pays with a ${bill} bill. How much change does {he} get?"
        lines.append(f"{_cap(he)} gets {_step(f'{bill}-{s}', r, True)} in change.")
        return q, lines, r
    if dr.paraphrase:
        q += f" How much money does {name} spend altogether?"
    else:
        q += f" How much does {name} spend in total?"
    return q, lines, s


def _gsm_wages(dr):
    name, he, _, _ = dr.person()
    w, h, days = dr.money(8, 30), dr.qty(2, 9, expand=False), dr.qty(2, 7, expand=False)
    day = w * h
    week = day * days
    if dr.paraphrase:
        q = f"{name} works {h} hours a day and {days} days a week. {_cap(he)} earns ${w} per hour."
    else:
        q = f"{name} earns ${w} an hour. {_cap(he)} works {h} hours a day, {days} days a week."
    lines = [f"{name} earns {_step(f'{w}*{h}', day, True)} per day.",
             f"In a week, {he} earns {_step(f'{day}*{days}', week, True)}."]
    if dr.coin(0.5, longer=False):
        if dr.paraphrase:
            q += f" How much money does {he} earn every week?"
        else:
            q += f" How much does {he} earn in a week?"
        return q, lines, week
    spend = dr.part(max(1, week // 10), week // 2)
    left = week - spend
    if dr.paraphrase:
        q += f" Each week, {he} spends ${spend} on food. How much money does {he} save every week?"
    else:
        q += f" {_cap(he)} spends ${spend} each week on food. How much does {he} save each week?"
    lines.append(f"{_cap(he)} saves {_step(f'{week}-{spend}', left, True)} each week.")
    return q, lines, left


def _gsm_share(dr):
    name, he, _, _ = dr.person()
    item = dr.choice(_SHARE_ITEMS)
    k, each = dr.qty(2, 8), dr.qty(2, 15)
    if dr.coin(0.5, longer=False):
        c = k * each
        a = dr.part(1, c - 1)
        b = c - a
        if dr.paraphrase:
            q = (f"{name} has {a} {item} and buys {b} more. {_cap(he)} shares all of the {item} equally"
                 f" among {k} friends. How many {item} does each of the friends get?")
        else:
            q = (f"{name} has {a} {item}. {_cap(he)} buys {b} more and shares all of them equally among"
                 f" {k} friends. How many {item} does each friend get?")
        lines = [f"{name} has {_step(f'{a}+{b}', c)} {item}.",
                 f"Each friend gets {_step(f'{c}/{k}', each)} {item}."]
        return q, lines, each
    keep = dr.qty(1, 12)
    r = k * each
    c = r + keep
    a = dr.part(1, c - 1)
    b = c - a
    if dr.paraphrase:
        q = (f"{name} has {a} {item}. Then {he} buys {b} more. {_cap(he)} keeps {keep} of them and shares"
             f" the rest equally among {k} friends. How many {item} does each of the friends get?")
    else:
        q = (f"{name} has {a} {item} and buys {b} more. {_cap(he)} keeps {keep} for"
             f" {'himself' if he == 'he' else 'herself'}"
             f" and shares the rest equally among {k} friends. How many {item} does each friend get?")
    lines = [f"{name} has {_step(f'{a}+{b}', c)} {item}.",
             f"{_cap(he)} shares {_step(f'{c}-{keep}', r)} {item}.",
             f"Each friend gets {_step(f'{r}/{k}', each)} {item}."]
    return q, lines, each


def _gsm_pages(dr):
    name, he, _, _ = dr.person()
    r, days = dr.qty(4, 20), dr.qty(2, 6)
    read = r * days
    half = dr.coin(0.5, longer=True)
    rest = 2 * dr.qty(5, 40) if half else dr.qty(5, 120)  # even when it is halved
    pages = read + rest
    if dr.paraphrase:
        q = f"{name} has a book with {pages} pages. {_cap(he)} reads {r} pages every day for {days} days."
    else:
        q = f"A book has {pages} pages. {name} reads {r} pages a day for {days} days."
    lines = [f"{name} reads {_step(f'{r}*{days}', read)} pages in {days} days.",
             f"There are {_step(f'{pages}-{read}', rest)} pages left."]
    if not half:
        if dr.paraphrase:
            q += " How many pages of the book are still left?"
        else:
            q += f" How many pages does {he} still have to read?"
        return q, lines, rest
    h = rest // 2
    if dr.paraphrase:
        q += f" Then {he} reads half of the pages that are left. How many pages are left now?"
    else:
        q += f" The next day, {he} reads half of the remaining pages. How many pages are left now?"
    lines.append(f"{_cap(he)} reads half of them, so {_step(f'{rest}/2', h)} pages are left.")
    return q, lines, h


def _gsm_garden(dr):
    name, _, _, _ = dr.person()
    sg, pl, fruit = dr.choice(_PLANTS)
    rows, per = dr.qty(2, 9), dr.qty(3, 12)
    total = rows * per
    dead = dr.part(1, total - 1)
    alive = total - dead
    y = dr.qty(2, 9)
    harvest = alive * y
    if dr.paraphrase:
        q = (f"{name} plants {pl} in {rows} rows, and each row has {per} {pl}. {dead} of them do not"
             f" survive. Each of the remaining {pl} gives {y} {fruit}. How many {fruit} does {name} pick"
             f" in total?")
    else:
        q = (f"{name} plants {rows} rows of {pl} with {per} {pl} in each row. {dead} of the {pl} do not"
             f" survive. Each remaining {sg} gives {y} {fruit}. How many {fruit} does {name} pick?")
    lines = [f"{name} plants {_step(f'{rows}*{per}', total)} {pl}.",
             f"{_step(f'{total}-{dead}', alive)} {pl} survive.",
             f"{name} picks {_step(f'{alive}*{y}', harvest)} {fruit}."]
    return q, lines, harvest


def _gsm_ages(dr):
    (n1, _), (n2, _), (n3, _) = dr.persons(3)
    a, k = dr.qty(3, 15, expand=False), dr.pick(2, 4)
    b = a * k
    diff = dr.qty(1, 12, expand=False)
    if dr.coin(0.5) and diff < b:
        c, expr, word = b - diff, f"{b}-{diff}", "younger"
    else:
        c, expr, word = b + diff, f"{b}+{diff}", "older"
    s = a + b + c
    if dr.paraphrase:
        q = (f"{n1} is {a} years old. {n2} is {_TIMES_WORDS[k]} as old as {n1}. {n3} is {diff} years"
             f" {word} than {n2}. How old are the three of them in total?")
    else:
        q = (f"{n1} is {a} years old. {n2} is {_TIMES_WORDS[k]} as old as {n1}, and {n3} is {diff} years"
             f" {word} than {n2}. What is the sum of their ages?")
    lines = [f"{n2} is {_step(f'{a}*{k}', b)} years old.",
             f"{n3} is {_step(expr, c)} years old.",
             f"The sum of their ages is {_step(f'{a}+{b}+{c}', s)}."]
    return q, lines, s


def _gsm_savings(dr):
    name, he, _, his = dr.person()
    s, w = dr.money(5, 40), dr.qty(3, 12)
    m = s * w
    gift = dr.choice(_GIFTS)
    half = dr.coin(0.5, longer=True)
    if half:
        t = m - 2 * dr.part(1, (m - 1) // 2)
    else:
        t = dr.part(1, m - 1)
    r = m - t
    if dr.paraphrase:
        q = f"Each week, {name} saves ${s}, and {he} does so for {w} weeks. Then {he} buys a {gift} for ${t}."
    else:
        q = f"{name} saves ${s} every week for {w} weeks. Then {he} spends ${t} on a {gift}."
    lines = [f"{name} saves {_step(f'{s}*{w}', m, True)}.",
             f"After buying the {gift}, {he} has {_step(f'{m}-{t}', r, True)} left."]
    if not half:
        if dr.paraphrase:
            q += " How much money is left?"
        else:
            q += f" How much money does {he} have left?"
        return q, lines, r
    g = r // 2
    rel = dr.choice(_RELATIVES)
    if dr.paraphrase:
        q += (f" {_cap(he)} gives half of the money that is left to {his} {rel}. How much money does {he}"
              f" keep for {'himself' if he == 'he' else 'herself'}?")
    else:
        q += f" {_cap(he)} gives half of the rest to {his} {rel}. How much money does {he} keep?"
    lines.append(f"{_cap(he)} keeps {_step(f'{r}/2', g, True)}.")
    return q, lines, g


def _gsm_bus(dr):
    v = dr.choice(_VEHICLES)
    a = dr.qty(15, 60)
    b = dr.part(1, a - 1)
    c = dr.qty(1, 30)
    x, y = a - b, a - b + c
    d = dr.part(1, y - 1)
    z = y - d
    if dr.paraphrase:
        q = (f"A {v} with {a} passengers leaves the station. At the first stop, {c} people get on and {b}"
             f" people get off. At the second stop, {d} people get off. How many passengers does the {v}"
             f" have now?")
    else:
        q = (f"A {v} leaves the station with {a} passengers. At the first stop, {b} people get off and {c}"
             f" people get on. At the second stop, {d} people get off. How many passengers are on the {v}"
             f" now?")
    lines = [f"After {b} people get off, there are {_step(f'{a}-{b}', x)} passengers.",
             f"After {c} people get on, there are {_step(f'{x}+{c}', y)} passengers.",
             f"After the second stop, there are {_step(f'{y}-{d}', z)} passengers."]
    return q, lines, z


def _gsm_boxes(dr):
    item = dr.choice(_SHARE_ITEMS)
    boxes, per = dr.qty(3, 10), dr.qty(5, 15)
    total = boxes * per
    k = dr.pick(2, 3)
    sold1 = dr.part(1, max(1, (total - 1) // (k + 1)))
    sold2 = sold1 * k
    left = total - sold1 - sold2
    if dr.paraphrase:
        q = (f"There are {per} {item} in each box, and a shop has {boxes} boxes of them. The shop sells"
             f" {sold1} {item} on Monday, and on Tuesday it sells {_TIMES_WORDS[k]} as many. How many {item}"
             f" does the shop still have?")
    else:
        q = (f"A shop has {boxes} boxes of {item}. Each box holds {per} {item}. The shop sells {sold1} {item}"
             f" on Monday and {_TIMES_WORDS[k]} as many on Tuesday. How many {item} are left?")
    lines = [f"The shop has {_step(f'{boxes}*{per}', total)} {item}.",
             f"On Tuesday it sells {_step(f'{sold1}*{k}', sold2)} {item}.",
             f"There are {_step(f'{total}-{sold1}-{sold2}', left)} {item} left."]
    return q, lines, left


def _gsm_fraction(dr):
    word, k = dr.choice(_FRACTIONS)
    n = k * dr.qty(4, 12)
    walk = n // k
    others = n - walk
    bus = dr.part(1, others - 1)
    bike = others - bus
    if dr.paraphrase:
        q = (f"A class has {n} students. {word} of the students walk to school. {bus} of the others come by"
             f" bus, and the rest ride a bike. How many of the students ride a bike?")
    else:
        q = (f"There are {n} students in a class. {word} of them walk to school, and {bus} of the others"
             f" come by bus. The rest ride a bike. How many students ride a bike?")
    lines = [f"{_step(f'{n}/{k}', walk)} students walk to school.",
             f"{_step(f'{n}-{walk}', others)} students do not walk.",
             f"{_step(f'{others}-{bus}', bike)} students ride a bike."]
    return q, lines, bike


def _gsm_fence(dr):
    name, _, _, _ = dr.person()
    length, price = dr.qty(4, 30), dr.money(2, 15)
    width = dr.part(2, length - 1)
    perimeter = 2 * length + 2 * width
    cost = perimeter * price
    if dr.paraphrase:
        q = (f"A garden is {length} meters long and {width} meters wide. {name} wants to put a fence around"
             f" it, and the fence costs ${price} per meter. What will the fence cost in total?")
    else:
        q = (f"{name} wants to put a fence around a garden that is {length} meters long and {width} meters"
             f" wide. The fence costs ${price} per meter. How much will the fence cost?")
    lines = [f"The fence is {_step(f'2*{length}+2*{width}', perimeter)} meters long.",
             f"It costs {_step(f'{perimeter}*{price}', cost, True)}."]
    return q, lines, cost


_GSM_TEMPLATES: tuple[Callable, ...] = (
    _gsm_sales, _gsm_shopping, _gsm_wages, _gsm_share, _gsm_pages, _gsm_garden, _gsm_ages,
    _gsm_savings, _gsm_bus, _gsm_boxes, _gsm_fraction, _gsm_fence,
)


def _render(question: str, lines: list[str], answer) -> tuple[str, str]:
    """(source, target): the question, and the solution lines with the final ``#### answer``."""
    lines = [_cap(line) for line in lines]
    return question, "\n".join(lines + [f"#### {answer}"])


def _gen_gsm8k(rng: random.Random) -> tuple[str, str]:
    template = rng.choice(_GSM_TEMPLATES)
    return _render(*template(Draws(rng)))


# ----------------------------------------------------------------------------- the valid solutions
# Other valid solutions of one problem (kdlib.data.variants; option 0 is the line as _render writes it):
# the operands of a sum or product in another order (both copies of the expression), a step that states
# its result through the calculator annotation alone ("has <<19+37=56>>56 shells", the expression not
# written out first; the annotation stays, so the calculator still does the arithmetic), a connective
# before a step, two independent steps in either order, word-level synonyms (kdlib.data.lexicons) and
# an optional closing sentence, worded one of several ways, before "#### answer".
_STEP = re.compile(r"(?<![\w.])([0-9][0-9+*]*[+*][0-9+*]*[0-9])(?= = \$?<<\1=)")
_CONNECTIVES = ("So ", "Then ", "This means ", "Therefore ", "Thus ", "Hence ", "That means ", "Next, ",
                "As a result, ")
_RESTATED = re.compile(r"(?<![\w.])([0-9][0-9+\-*/.]*) = (\$?)<<\1=")
_CLOSINGS = ("So the answer is {}.", "The answer is {}.", "Therefore, the answer is {}.", "Thus the answer is {}.",
             "The final answer is {}.")
_LOWER_FIRST = {"The", "There", "Each", "It", "In", "On", "After", "Altogether", "He", "She"}


def _orders(expr: str) -> list[str]:
    """``expr`` and its operands in every other order when it is a pure sum or pure product."""
    for op in "+*":
        parts = expr.split(op)
        if len(parts) > 1 and all(p.isdigit() for p in parts):
            seen = [expr]
            for perm in itertools.permutations(parts):
                e = op.join(perm)
                if e not in seen:
                    seen.append(e)
            return seen
    return [expr]


def _line_node(line: str, first: bool) -> Node:
    """One step, with or without the expression written out before its annotation (with: canonical)."""
    bare = _RESTATED.sub(r"\2<<\1=", line)
    if bare == line:
        return _line_forms(line, first)
    return Alt([_line_forms(line, first), _line_forms(bare, first)])


def _line_forms(line: str, first: bool) -> Node:
    m = _STEP.search(line)
    if m is None:
        body = Lit(line)
    else:
        expr = m.group(1)
        head, tail = line[:m.start()], line[m.end():].replace(f"<<{expr}=", "<<{expr}=", 1)
        body = Alt([Seq(head, e, tail.replace("<<{expr}=", f"<<{e}=", 1)) for e in _orders(expr)])
    if first:
        return body
    word = line.split(" ", 1)[0]
    lowered = (word[0].lower() + line[1:]) if word in _LOWER_FIRST else line
    if m is not None:
        expr = m.group(1)
        lo_head, lo_tail = lowered[:m.start()], lowered[m.end():].replace(f"<<{expr}=", "<<{expr}=", 1)
        lo_body = Alt([Seq(lo_head, e, lo_tail.replace("<<{expr}=", f"<<{e}=", 1)) for e in _orders(expr)])
    else:
        lo_body = Lit(lowered)
    return Alt([body] + [Seq(c, lo_body) for c in _CONNECTIVES])


def _uses(line: str, earlier: str) -> bool:
    """Whether ``line`` may use ``earlier``'s result (its value appears among ``line``'s numbers)."""
    result = re.findall(r">>(\d+(?:\.\d+)?)", earlier)
    return any(r in re.findall(r"\d+(?:\.\d+)?", line) for r in result)


def _gsm_node(question: str, lines: list[str], answer) -> tuple[str, Node]:
    """(source, every valid solution); canonical = ``_render(question, lines, answer)[1]``."""
    lines = [_cap(line) for line in lines]
    if len(lines) >= 3 and not _uses(lines[1], lines[0]):  # two independent first steps: either order
        orders = [lines, [lines[1], lines[0]] + lines[2:]]
    else:
        orders = [lines]
    steps: dict[tuple[str, bool], Node] = {}  # each step's node built (and its words varied) once, shared by the orders
    options = []
    for ls in orders:
        parts = []
        for i, line in enumerate(ls):
            if (line, i == 0) not in steps:
                steps[line, i == 0] = lexical(_line_node(line, i == 0), GSM8K_LEXICON)
            parts += [steps[line, i == 0], "\n"]
        options.append(Seq(*parts))
    closing = lexical(Alt([""] + [c.format(answer) + "\n" for c in _CLOSINGS]), GSM8K_LEXICON)
    return question, Seq(Alt(options), closing, f"#### {answer}")


def _gen_gsm8k_node(rng: random.Random) -> tuple[str, Node]:
    """(question, the distribution of its valid solutions); draws from ``rng`` exactly as ``_gen_gsm8k``."""
    template = rng.choice(_GSM_TEMPLATES)
    return _gsm_node(*template(Draws(rng)))
