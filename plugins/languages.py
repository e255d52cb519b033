"""Which words name a human language, for the heuristic extractor's profile ``language``.

"I speak French" states a language; "I speak Python fluently" or "my favorite language is
Python" do not, though the words are the same shape. So a learned language must be one this
module knows: a language's English name (or its own name, "Deutsch", "Español") or a BCP 47
tag whose primary subtag is an ISO 639-1 code ("fr", "pt-BR", "zh-Hant-TW") or one of the few
three-letter codes people write ("yue", "fil"). A manual value (PATCH /profiles) is not
checked against these lists: the user may name any language.
"""

from __future__ import annotations

import re

# English names, lower case; the languages with the most speakers, the official languages of
# most countries, and the ones that tend to be asked about in an application's settings.
_NAMES = frozenset("""
afrikaans akan albanian amharic arabic armenian assamese azerbaijani azeri basque belarusian bengali bangla
bosnian breton bulgarian burmese cantonese catalan cebuano chichewa chinese corsican croatian czech danish dari
dutch dzongkha english esperanto estonian ewe faroese farsi fijian filipino finnish flemish french frisian fula
galician georgian german greek greenlandic guarani gujarati haitian hausa hawaiian hebrew hindi hmong hungarian
icelandic igbo ilocano indonesian inuktitut irish italian japanese javanese kannada kashmiri kazakh khmer
kinyarwanda kirundi konkani korean kurdish kyrgyz lao latin latvian lingala lithuanian luxembourgish macedonian
maithili malagasy malay malayalam maltese mandarin manx maori marathi moldovan mongolian montenegrin nepali
norwegian occitan odia oriya oromo pashto persian polish portuguese punjabi quechua romanian romansh russian
samoan sanskrit scots serbian sesotho setswana shona sindhi sinhala sinhalese slovak slovenian slovene somali
sotho spanish sundanese swahili swedish tagalog tajik tamil tatar telugu thai tibetan tigrinya tongan tsonga
tswana turkish turkmen twi ukrainian urdu uyghur uzbek vietnamese welsh wolof xhosa yiddish yoruba zulu
deutsch español espanol français francais italiano português portugues nederlands polski svenska norsk dansk
suomi türkçe turkce magyar čeština cestina română romana hrvatski srpski ελληνικά русский українська
""".split())

# ISO 639-1: the two-letter primary subtags of BCP 47.
_TWO_LETTER = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el
en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu
ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na
nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so
sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())
# Three-letter codes in common use where no two-letter one exists (or people prefer it).
_THREE_LETTER = frozenset("yue cmn fil haw ast ceb hmn ckb gsw nds sco".split())

_PRIMARY_SUBTAGS = _TWO_LETTER | _THREE_LETTER
_TAG = re.compile(r"^(?P<primary>[a-z]{2,3})(?:-[a-z0-9]{2,8})*$")


def is_language_name(text: str) -> bool:
    """Whether ``text`` is a language's name: "French", "français" (not "Python")."""
    return text.strip().casefold() in _NAMES


def is_language_tag(text: str) -> bool:
    """Whether ``text`` is a BCP 47 tag of a known language: "fr", "pt-BR", "zh_Hant" (not "py")."""
    tag = _TAG.match(text.strip().casefold().replace("_", "-"))
    return tag is not None and tag.group("primary") in _PRIMARY_SUBTAGS
