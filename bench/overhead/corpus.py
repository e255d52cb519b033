"""What the memory targets of the overhead benchmark say: the subject's seeded memories, the
questions (h) asks and the first-person statements (g) makes, all made here, deterministically.

Seeded memories are third-person facts of the kind a learning gateway stores ("User's sister
Marta lives in Lyon"), built from a few families of templates with slots filled from small
vocabularies by a seeded random generator, so 300 or 10,000 of them are all different and the
same seed gives the same memories. The first few are *anchors*: one answer for each question
and statement below, so recall finds something for every one of them at any memory count (the
benchmark checks that it does before measuring). The rest share the anchors' vocabulary
(relations, cities, drinks, ...), so a question recalls several memories, as it would for a
real subject, not just the one it was written for.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

RELATIONS = ["sister", "brother", "mother", "father", "daughter", "son", "cousin", "aunt", "uncle", "grandmother",
             "best friend", "partner", "neighbour", "colleague"]
NAMES = ["Anna", "Marta", "Tom", "Luca", "Emma", "Noah", "Sofia", "Jonas", "Ines", "Hugo", "Mei", "Ravi", "Clara",
         "Omar", "Lena", "Diego", "Yuki", "Zoe", "Felix", "Amara"]
CITIES = ["Lyon", "Porto", "Kyoto", "Toronto", "Nairobi", "Lima", "Oslo", "Seville", "Krakow", "Melbourne", "Austin",
          "Ghent", "Bologna", "Valparaiso", "Hanoi", "Tallinn", "Cork", "Zagreb", "Leipzig", "Marseille"]
JOBS = ["nurse", "architect", "teacher", "baker", "pilot", "lawyer", "chemist", "carpenter", "translator", "vet",
        "firefighter", "journalist", "dentist", "software engineer", "librarian", "chef"]
DRINKS = ["green tea", "black coffee", "oolong tea", "chai", "espresso", "matcha", "hot chocolate", "mint tea",
          "rooibos", "flat white"]
ADDITIONS = ["oat milk", "honey", "lemon", "a little sugar", "cinnamon", "nothing in it"]
FOODS = ["ramen", "sourdough bread", "dark chocolate", "mango", "goat cheese", "sushi", "lentil soup", "pistachios",
         "blueberries", "falafel", "paella", "dumplings", "kimchi", "figs"]
ACTIVITIES = ["hiking", "bouldering", "pottery", "sailing", "chess", "birdwatching", "cycling", "knitting",
              "salsa dancing", "trail running", "baking", "gardening", "kayaking", "photography", "yoga", "swimming"]
INSTRUMENTS = ["cello", "piano", "violin", "guitar", "drums", "flute", "saxophone", "ukulele", "trumpet", "harp"]
PETS = ["dog", "cat", "parrot", "rabbit", "tortoise", "hamster", "goldfish", "ferret"]
DAYS = ["Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
ALLERGENS = ["peanuts", "shellfish", "pollen", "penicillin", "latex", "sesame", "gluten", "dust mites"]
LANGUAGES = ["Portuguese", "Japanese", "Swahili", "Polish", "Italian", "Korean", "Dutch", "Arabic", "Spanish",
             "Vietnamese"]

# (kind, template): each slot is filled from the vocabulary of the same name.
FAMILIES: list[tuple[str, str]] = [
    ("fact", "User's {relation} {name} lives in {city}"),
    ("fact", "User's {relation} {name} works as a {job} in {city}"),
    ("preference", "User drinks {drink} with {addition} on {day}"),
    ("preference", "User loves {food}, especially the way {relation} {name} makes it"),
    ("preference", "User goes {activity} with {relation} {name} on {day}"),
    ("fact", "User has a {pet} named {name} who is {small} years old"),
    ("fact", "User plays the {instrument} in a band with {relation} {name}"),
    ("event", "User visited {city} in {month} {year} and loved the {food}"),
    ("fact", "User is allergic to {allergen} and carries medicine when visiting {city}"),
    ("fact", "User is learning {language} to talk with {relation} {name}"),
    ("fact", "User's {relation} {name} has a birthday on {month} {dom}"),
    ("event", "User wants to visit {city} in {year} to go {activity}"),
]

_SLOTS: dict[str, Callable[[random.Random], str]] = {
    "relation": lambda r: r.choice(RELATIONS), "name": lambda r: r.choice(NAMES), "city": lambda r: r.choice(CITIES),
    "job": lambda r: r.choice(JOBS), "drink": lambda r: r.choice(DRINKS), "addition": lambda r: r.choice(ADDITIONS),
    "food": lambda r: r.choice(FOODS), "activity": lambda r: r.choice(ACTIVITIES),
    "instrument": lambda r: r.choice(INSTRUMENTS), "pet": lambda r: r.choice(PETS), "day": lambda r: r.choice(DAYS),
    "month": lambda r: r.choice(MONTHS), "allergen": lambda r: r.choice(ALLERGENS),
    "language": lambda r: r.choice(LANGUAGES), "year": lambda r: str(r.randint(2012, 2027)),
    "small": lambda r: str(r.randint(1, 14)), "dom": lambda r: str(r.randint(1, 28)),
}

# One answer per question and statement below, stored first (kind, text).
ANCHORS: list[tuple[str, str]] = [
    ("fact", "User's sister Marta lives in Lyon"),
    ("fact", "User's brother Tom works as a nurse in Porto"),
    ("fact", "User has a dog named Rex who is 4 years old"),
    ("fact", "User plays the cello in a band with cousin Luca"),
    ("preference", "User drinks green tea with honey every morning"),
    ("event", "User visited Kyoto in April 2023 and loved the ramen"),
    ("fact", "User is allergic to peanuts and carries medicine when visiting Lima"),
    ("fact", "User is learning Japanese to talk with partner Yuki"),
    ("fact", "User's mother Clara has a birthday on March 14"),
    ("preference", "User goes hiking with best friend Omar on Saturdays"),
    ("preference", "User loves dark chocolate, especially the way grandmother Ines makes it"),
    ("event", "User wants to visit Nairobi in 2027 to go birdwatching"),
]

# (h): questions a user asks, each answered by an anchor (and usually by a few other memories).
QUESTIONS = [
    "Where does my sister live?",
    "What does my brother Tom do for work?",
    "What is the name of my dog?",
    "Which instrument do I play in the band?",
    "What do I drink every morning?",
    "When did I visit Kyoto?",
    "What am I allergic to?",
    "Why am I learning Japanese?",
    "When is my mother's birthday?",
    "Who do I go hiking with?",
    "Do you remember who makes my favourite dark chocolate?",
    "Where do I want to travel to go birdwatching?",
]

# (g): first-person statements the heuristic extractor learns from (each makes at least one
# memory: checked before the run), on the same topics, so recall finds memories for them too.
STATEMENTS = [
    "I love green tea with honey.",
    "My sister is a teacher in Lyon.",
    "I play the cello every Sunday.",
    "I have a dog named Rex.",
    "I am allergic to peanuts.",
    "I enjoy hiking with my best friend Omar.",
    "My brother Tom is a nurse in Porto.",
    "I usually drink black coffee on Mondays.",
    "My favorite food is ramen from Kyoto.",
    "I want to visit Nairobi to go birdwatching.",
    "I work as a translator in Ghent.",
    "I speak Japanese with my partner Yuki.",
    "I really enjoy dark chocolate.",
    "My mother Clara is a pilot.",
    "I have a parrot named Sofia.",
    "I prefer oolong tea with lemon.",
]


def seeded_memories(count: int, seed: int = 7) -> Iterator[tuple[str, str]]:
    """``count`` different (kind, text) memories: the anchors first, then generated ones."""
    seen: set[str] = set()
    rng = random.Random(seed)
    for kind, text in ANCHORS[:count]:
        seen.add(text)
        yield kind, text
    made = len(seen)
    while made < count:
        kind, template = rng.choice(FAMILIES)
        text = template.format(**{slot: fill(rng) for slot, fill in _SLOTS.items() if "{" + slot + "}" in template})
        if text in seen:
            continue
        seen.add(text)
        made += 1
        yield kind, text
