"""mini-europarl's distribution of valid translations (kdlib.data.variants nodes).

The canonical option of every choice is the Dutch of :func:`kdlib.data.europarl._render_europarl`
(tests check equality on thousands of specs), so ambiguity 0 is the old task. Other valid
renderings of the same English:

* lexical choice: Dutch synonyms of verbs (``verwerpen`` for ``afwijzen``, separable ones included:
  ``legt ... voor``), of some nouns (same gender, so articles and adjectives stay right), of
  adverbials (``Uiteraard`` / ``Vanzelfsprekend`` for ``Natuurlijk``), conjunctions (``aangezien``
  for ``omdat``) and verbs of saying;
* the present tense for the future (``Morgen bespreekt de raad ...`` for ``Morgen zal de raad ...
  bespreken``);
* phrase order: a fronted adverbial may stay in the middle field (``De raad bespreekt morgen ...``),
  a subordinate clause may come before or after its main clause (the main clause inverts when it
  follows).

At ambiguity > 0 an example is a passage of two sentences (Europarl's sentences are long; one
generated sentence is about ten words), each translated independently.
"""

from __future__ import annotations

import random

from kdlib.data.common import _cap
from kdlib.data.europarl import (
    _EP_ADJS,
    _EP_ADVERBS,
    _EP_AUX,
    _EP_CONJ,
    _EP_NATIONALITIES,
    _EP_NOUNS,
    _EP_SAY,
    _EP_SUBJECTS,
    _EP_VERBS,
    _ep_sample_spec,
    _render_europarl,
)
from kdlib.data.variants import Alt, Node, Seq, alt

# Dutch synonyms: (particle, finite singular, finite plural, participle), as in _EP_VERBS.
_NL_VERB_SYNONYMS = {
    "support": [("", "ondersteunt", "ondersteunen", "ondersteund"), ("", "onderschrijft", "onderschrijven", "onderschreven")],
    "discuss": [("", "behandelt", "behandelen", "behandeld"), ("door", "spreekt", "spreken", "doorgesproken")],
    "reject": [("", "verwerpt", "verwerpen", "verworpen"), ("", "weigert", "weigeren", "geweigerd")],
    "approve": [("", "bekrachtigt", "bekrachtigen", "bekrachtigd"), ("", "billijkt", "billijken", "gebillijkt")],
    "adopt": [("", "aanvaardt", "aanvaarden", "aanvaard"), ("vast", "stelt", "stellen", "vastgesteld")],
    "submit": [("voor", "legt", "leggen", "voorgelegd"), ("", "presenteert", "presenteren", "gepresenteerd")],
    "examine": [("", "bestudeert", "bestuderen", "bestudeerd"), ("", "analyseert", "analyseren", "geanalyseerd"),
                ("", "bekijkt", "bekijken", "bekeken")],
    "welcome": [("", "verwelkomt", "verwelkomen", "verwelkomd"), ("", "begroet", "begroeten", "begroet")],
    "amend": [("aan", "past", "passen", "aangepast"), ("", "verandert", "veranderen", "veranderd"),
              ("", "herziet", "herzien", "herzien")],
    "criticise": [("", "hekelt", "hekelen", "gehekeld"), ("af", "keurt", "keuren", "afgekeurd")],
    "publish": [("bekend", "maakt", "maken", "bekendgemaakt"), ("uit", "geeft", "geven", "uitgegeven")],
    "postpone": [("op", "schort", "schorten", "opgeschort"), ("", "verdaagt", "verdagen", "verdaagd"),
                 ("", "verschuift", "verschuiven", "verschoven")],
    "withdraw": [("terug", "trekt", "trekken", "teruggetrokken"), ("", "herroept", "herroepen", "herroepen")],
    "accept": [("", "accepteert", "accepteren", "geaccepteerd"), ("aan", "neemt", "nemen", "aangenomen")],
    "prepare": [("op", "stelt", "stellen", "opgesteld"), ("uit", "werkt", "werken", "uitgewerkt")],
    "implement": [("toe", "past", "passen", "toegepast"), ("", "implementeert", "implementeren", "geïmplementeerd"),
                  ("", "realiseert", "realiseren", "gerealiseerd")],
    "defend": [("", "bepleit", "bepleiten", "bepleit")],
    "assess": [("", "toetst", "toetsen", "getoetst"), ("", "evalueert", "evalueren", "geëvalueerd")],
    "finance": [("", "bekostigt", "bekostigen", "bekostigd"), ("", "subsidieert", "subsidiëren", "gesubsidieerd"),
                ("", "betaalt", "betalen", "betaald")],
    "sign": [("", "tekent", "tekenen", "getekend"), ("", "parafeert", "paraferen", "geparafeerd")],
    "propose": [("", "oppert", "opperen", "geopperd"), ("aan", "draagt", "dragen", "aangedragen")],
}
# Same-gender noun synonyms: (singular, plural).
_NL_NOUN_SYNONYMS = {
    "report": [("rapport", "rapporten"), ("document", "documenten")],
    "proposal": [("ontwerp", "ontwerpen")],
    "framework": [("raamwerk", "raamwerken")],
    "amendment": [("wijzigingsvoorstel", "wijzigingsvoorstellen")],
    "agreement": [("afspraak", "afspraken")],
    "plan": [("project", "projecten")],
    "regulation": [("regeling", "regelingen")],
    "strategy": [("aanpak", None)],
    "compromise": [("akkoord", "akkoorden")],
    "measure": [("ingreep", "ingrepen")],
    "treaty": [("traktaat", "traktaten")],
    "position": [("gezichtspunt", "gezichtspunten")],
}
# Adjective synonyms: (bare, inflected), as in _EP_ADJS.
_NL_ADJ_SYNONYMS = {
    "important": [("gewichtig", "gewichtige"), ("wezenlijk", "wezenlijke")],
    "clear": [("helder", "heldere")],
    "common": [("gezamenlijk", "gezamenlijke")],
    "current": [("actueel", "actuele")],
    "final": [("uiteindelijk", "uiteindelijke")],
    "provisional": [("tijdelijk", "tijdelijke")],
    "strong": [("krachtig", "krachtige")],
    "large": [("omvangrijk", "omvangrijke")],
    "small": [("beperkt", "beperkte")],
    "good": [("degelijk", "degelijke")],
    "broad": [("ruim", "ruime")],
    "detailed": [("uitvoerig", "uitvoerige")],
    "joint": [("gemeenschappelijk", "gemeenschappelijke")],
    "difficult": [("lastig", "lastige"), ("zwaar", "zware")],
    "fair": [("rechtvaardig", "rechtvaardige")],
    "modern": [("hedendaags", "hedendaagse")],
    "reasonable": [("billijk", "billijke")],
}
_NL_SUBJECT_SYNONYMS = {"government": ["overheid"], "governments": ["overheden"], "delegation": ["afvaardiging"],
                        "minister": ["bewindsman"], "ministers": ["bewindslieden"], "citizens": ["inwoners"],
                        "member states": ["EU-landen"]}
_NL_ADVERB_SYNONYMS = {
    "today": ["Heden"], "now": ["Momenteel", "Op dit moment", "Thans"], "therefore": ["Om die reden", "Derhalve"],
    "unfortunately": ["Jammer genoeg", "Spijtig genoeg"], "fortunately": ["Gelukkigerwijs"],
    "of course": ["Uiteraard", "Vanzelfsprekend"], "nevertheless": ["Toch", "Niettemin", "Evenwel"],
    "in addition": ["Daarnaast", "Verder", "Tevens"], "in my opinion": ["Volgens mij", "Mijns inziens", "Naar mijn idee"],
    "next week": ["Komende week"], "next month": ["Komende maand"], "next year": ["Komend jaar"],
    "last week": ["Verleden week"], "last month": ["Verleden maand"], "last year": ["Verleden jaar"],
}
_NL_CONJ_SYNONYMS = {"because": ["aangezien", "daar"], "although": ["ofschoon"], "if": ["indien", "wanneer"]}
_NL_SAY_SYNONYMS = {"say": [("verklaart", "verklaren"), ("stelt", "stellen")], "think": [("meent", "menen"), ("vindt", "vinden")],
                    "expect": [("rekent erop", "rekenen erop")], "note": [("stelt vast", "stellen vast")]}


def _words(*parts) -> Node:
    """Parts (strings or nodes; empty strings dropped) joined by single spaces."""
    seq = []
    for p in parts:
        if isinstance(p, str) and not p:
            continue
        if seq:
            seq.append(" ")
        seq.append(p)
    return Seq(*seq)


def _subject_nl(spec, cap: bool = False) -> Node:
    key, adj = spec
    _, art, nl, _, _ = _EP_SUBJECTS[key]
    nouns = [nl] + _NL_SUBJECT_SYNONYMS.get(key, [])
    pre = f"{(_EP_NATIONALITIES.get(adj) or _EP_ADJS[adj])[1]} " if adj is not None else ""
    art = _cap(art) if cap else art
    return alt(*(f"{art} {pre}{n}" for n in nouns))


def _object_nl(obj: dict) -> Node:
    _, _, nl_sg, nl_pl, gender = _EP_NOUNS[obj["noun"]]
    plural, det, adj = obj.get("plural", False), obj["det"], obj.get("adj")
    het = gender == "het" and not plural
    nouns = [(nl_sg, nl_pl)] + _NL_NOUN_SYNONYMS.get(obj["noun"], [])
    art = {"the": "het" if het else "de", "a": "een", "this": "dit" if het else "deze",
           "our": "ons" if het else "onze", "": ""}[det]
    adjective = ""
    if adj is not None:  # the bare form only after "een" (or nothing) with a singular het-noun
        forms = [_EP_ADJS[adj]] + _NL_ADJ_SYNONYMS.get(adj, [])
        adjective = alt(*(bare if (det == "a" and het) else inflected for bare, inflected in forms))
    node = _words(art, adjective, alt(*(pl if plural else sg for sg, pl in nouns)))
    if obj.get("of") is not None:
        node = Seq(node, " van ", _subject_nl(obj["of"]))
    return node


def _clause_nl(c: dict, order: str, verb: tuple, tense: str, adv: Node | None, cap: bool) -> Node:
    """The Dutch of one clause with one verb and tense (the word order of europarl._ep_clause);
    ``adv``: an adverbial in the middle field, right after the finite verb (main order only)."""
    plural = _EP_SUBJECTS[c["subj"][0]][3]
    particle, nl_sg, nl_pl, nl_pp = verb
    neg = c.get("neg", False)
    subj = _subject_nl(c["subj"], cap=cap)
    obj = _object_nl(c["obj"]) if c["obj"] is not None else ""
    if tense == "present":
        finite, final = (nl_pl if plural else nl_sg), ([particle] if particle else [])
        sub_cluster = [particle + finite]  # verb-final: the particle joins the verb again
    elif tense in ("perfect", "past"):
        finite = _EP_AUX["perfect"][3 if plural else 2]
        final, sub_cluster = [nl_pp], [finite, nl_pp]
    else:
        finite = _EP_AUX[tense][3 if plural else 2]
        final, sub_cluster = [particle + nl_pl], [finite, particle + nl_pl]
    middle = [obj] + (["niet"] if neg else [])
    if order == "main":
        words = [subj, finite] + ([adv] if adv is not None else []) + middle + final
    elif order == "inv":
        words = [finite, subj] + middle + final
    else:
        words = [subj] + middle + sub_cluster
    node = _words(*words)
    if c.get("rel") is not None:
        _, _, _, _, gender = _EP_NOUNS[c["obj"]["noun"]]
        pron = "dat" if (gender == "het" and not c["obj"].get("plural", False)) else "die"
        node = Seq(node, f" {pron} ", _clause_node(dict(c["rel"], obj=None), "sub"))
    return node


def _clause_node(c: dict, order: str, adv: Node | None = None, cap: bool = False) -> Node:
    """Every valid Dutch rendering of one clause: verb synonyms x (for the future) the present tense."""
    verbs = [_EP_VERBS[c["verb"]][4:]] + _NL_VERB_SYNONYMS.get(c["verb"], [])
    tenses = [c["tense"]] + (["present"] if c["tense"] == "future" else [])
    return Alt([_clause_nl(c, order, v, t, adv, cap) for t in tenses for v in verbs])


def _adverb(front: str, cap: bool) -> Node:
    words = [_EP_ADVERBS[front][1]] + _NL_ADVERB_SYNONYMS.get(front, [])
    return alt(*(w if cap else w[0].lower() + w[1:] for w in words))


def _conj(conj: str, cap: bool) -> Node:
    words = [_EP_CONJ[conj][1]] + _NL_CONJ_SYNONYMS.get(conj, [])
    return alt(*(_cap(w) if cap else w for w in words))


def europarl_node(spec: dict) -> Node:
    """Every valid Dutch translation of one sentence spec (canonical: ``_render_europarl(spec)[1]``)."""
    kind = spec["kind"]
    if kind == "simple":
        front = spec.get("front")
        if front is None:
            node = _clause_node(spec["main"], "main", cap=True)
        else:
            node = Alt([Seq(_adverb(front, True), " ", _clause_node(spec["main"], "inv")),
                        _clause_node(spec["main"], "main", adv=_adverb(front, False), cap=True)])
    elif kind in ("trailing", "fronted"):
        conj = spec["conj"]
        trailing = Seq(_clause_node(spec["main"], "main", cap=True), ", ", _conj(conj, False), " ",
                       _clause_node(spec["sub"], "sub"))
        fronted = Seq(_conj(conj, True), " ", _clause_node(spec["sub"], "sub"), ", ",
                      _clause_node(spec["main"], "inv"))
        if conj == "while":  # "terwijl" first reads as a time clause, not a contrast
            node = trailing
        else:
            node = Alt([trailing, fronted] if kind == "trailing" else [fronted, trailing])
    else:
        plural = _EP_SUBJECTS[spec["speaker"][0]][3]
        say = [_EP_SAY[spec["say"]][2:]] + _NL_SAY_SYNONYMS.get(spec["say"], [])
        node = Seq(_subject_nl(spec["speaker"], cap=True), " ", alt(*(pl if plural else sg for sg, pl in say)),
                   " dat ", _clause_node(spec["sub"], "sub"))
    return Seq(node, ".")


def _one(rng: random.Random) -> tuple[str, Node]:
    while True:  # as europarl._gen_europarl: source and target <= 22 words
        spec = _ep_sample_spec(rng)
        en, nl = _render_europarl(spec)
        if len(en.split()) <= 22 and len(nl.split()) <= 22:
            return en, europarl_node(spec)


def _gen_europarl_node(rng: random.Random, passage: bool = False) -> tuple[str, Node]:
    """(English, the distribution of its Dutch translations): one sentence drawn from ``rng`` exactly as
    ``_gen_europarl`` draws it, or with ``passage`` two sentences translated one after the other."""
    en, node = _one(rng)
    if not passage:
        return en, node
    en2, node2 = _one(rng)
    return f"{en} {en2}", Seq(node, " ", node2)
