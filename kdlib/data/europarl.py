"""mini-europarl: English -> Dutch from a small bilingual grammar with Dutch word order.

Verb-second main clauses with inversion after a fronted adverbial or subordinate clause,
verb-final subordinate and relative clauses, separable verbs (``wijst ... af``), the perfect with
the participle at the end, de/het gender with adjective inflection, ``niet`` placement.
"""

from __future__ import annotations

import random

from kdlib.data.common import _a, _cap

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
