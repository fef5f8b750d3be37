#!/usr/bin/env python3
"""Deterministic generator of a synthetic ADDM workspace.

Why this exists: the real Yelp-derived ADDM data cannot be shipped with the project, yet the pipelines,
their tests and any rehearsal of a batch run need input with the real shapes and realistic sizes. This
script writes, under a workspace root, everything the two pipelines read, in the formats of
``docs/formats.md``:

* ``data/context/<domain>/dataset_K<k>.jsonl``: the restaurants and their reviews;
* ``data/tasks/<domain>/G1a.json``: the per-review allergy task (pipeline A);
* ``data/query/<domain>/G1_allergy_V2_K<k>_prompt.txt``: the per-restaurant agenda (pipeline B);
* ``data/answers/<domain>/G1_allergy_V2_K<k>_groundtruth.json``: verdicts derived from the allergy
  incidents deliberately planted in the reviews, so that scoring has real signal.

Everything is drawn from one ``random.Random(seed)`` and no clock is read, so the same arguments always give
byte-identical files (tests and benchmarks compare runs). Each file is written through the project's one atomic
write (temp, fsync, rename; a file replaced keeps its mode), so a reader never sees a half-written input.

Usage: ``python scripts/gen_data.py --root DIR [--restaurants 100] [--k 25] [--seed 0] [--domain yelp] [--force]``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addm_integration.store.workspace import atomic_write

__all__ = [
    "GENERATED_AT",
    "ID_ALPHABET",
    "POLICY_ID",
    "TASK_ID",
    "TOPIC_ID",
    "VERDICTS",
    "generate",
    "main",
]

TASK_ID = "G1a"
TOPIC_ID = "G1_allergy"
POLICY_ID = "G1_allergy_V2"
VERDICTS = ("Low Risk", "High Risk", "Critical Risk")
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
ID_LENGTH = 22
# A fixed stamp instead of the clock: a timestamp that changes per run would break byte-identical output.
GENERATED_AT = "2025-01-01T00:00:00+00:00"

ALLERGY_SHARE = 0.115  # ~12% of reviews mention allergies once the per-class minimums are added
SHARE_CRITICAL = 0.10
SHARE_HIGH = 0.30
MIN_TEXT_CHARS = 39
MAX_TEXT_CHARS = 2000
MEDIAN_TEXT_CHARS = 350
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9_-]+$")

# --------------------------------------------------------------------------------------------------------
# The per-review task (pipeline A). Value order matters: the first value is the field's safe default.
# --------------------------------------------------------------------------------------------------------

TASK_DESCRIPTION = (
    "Food allergy incidents and allergy safety. Decide whether the review describes a food allergy "
    "(nuts/peanuts, gluten/celiac, shellfish, dairy or another allergen) in connection with this "
    "restaurant: an allergic reaction after eating here, a claim by the restaurant that a dish was free of "
    "an allergen, or how staff handled an allergy request. Reviews that only mention seasonal allergies, "
    "diets by preference or that say nothing about allergies are not relevant."
)

TASK_FIELDS: dict[str, dict[str, str]] = {
    "incident_severity": {
        "none": "No allergic reaction happened (or the review only discusses allergy handling or risk).",
        "mild": "A minor reaction: tingling, itching, a few hives or slight discomfort that passed on its own "
        "or with an over-the-counter antihistamine.",
        "moderate": "A clear reaction needing treatment or ruining the evening: widespread hives, swelling, "
        "vomiting, stomach cramps, but no emergency care.",
        "severe": "A life-threatening reaction: anaphylaxis, throat closing, trouble breathing, epinephrine "
        "(EpiPen) use, an ambulance, the emergency room or a hospital stay.",
    },
    "account_type": {
        "firsthand": "The reviewer personally had the allergy and experienced what is described.",
        "secondhand": "The reviewer describes what happened to someone else (a friend, partner, child, "
        "coworker) who was with them or told them.",
        "hypothetical": "A warning or speculation about what could happen to someone with an allergy; no "
        "actual event at this restaurant is described.",
    },
    "assurance_claim": {
        "false": "The restaurant made no claim that the food was safe or free of the allergen.",
        "true": "Staff, the menu or the restaurant explicitly said a dish was free of the allergen or safe "
        "for the allergy.",
        "unknown": "The review is ambiguous about whether any safety claim was made.",
    },
    "staff_response": {
        "none": "Staff were not told about the allergy, or the review says nothing about their response.",
        "accommodated": "Staff took the allergy seriously: checked ingredients, prepared food separately, "
        "apologized and helped after a reaction.",
        "refused": "Staff declined to serve or adapt a dish because they could not guarantee it was safe.",
        "dismissive": "Staff ignored, belittled or brushed off the allergy or the reaction.",
        "unknown": "Staff were told, but the review does not say how they responded.",
    },
}

# --------------------------------------------------------------------------------------------------------
# The per-restaurant agenda (pipeline B). The rules are the ones _verdict() applies to build ground truth,
# so a model that follows the agenda faithfully can reach 100% accuracy.
# --------------------------------------------------------------------------------------------------------

POLICY_PROMPT = """\
# Policy G1_allergy_V2: Food allergy safety (K={k})

## Goal
You are assessing how safe this restaurant is for diners with food allergies, using only the reviews
shown in the context above (up to {k} reviews of one restaurant). Assign exactly one verdict:
Low Risk, High Risk or Critical Risk. The verdict must rest on what reviewers report, not on the cuisine,
the menu or general assumptions about a type of restaurant.

## What counts as allergy evidence
Read every review and look for mentions of food allergies: peanuts and tree nuts, gluten or celiac
disease, shellfish, dairy or milk, and any other food allergen. For each relevant review determine:

1. incident_severity - did an allergic reaction actually happen after eating here?
   - none: no reaction (the review only discusses precautions, questions or risk);
   - mild: tingling, itching, a few hives, slight discomfort that passed quickly;
   - moderate: widespread hives, swelling, vomiting or cramps; unpleasant but no emergency care;
   - severe: anaphylaxis, throat closing, trouble breathing, EpiPen/epinephrine, ambulance, ER, hospital.
2. account_type - firsthand (the reviewer), secondhand (someone the reviewer dined with or knows),
   or hypothetical (a warning about what could happen; nothing happened).
3. assurance_claim - did staff or the menu claim the food was free of the allergen (true/false/unknown)?
4. staff_response - none, accommodated, refused, dismissive or unknown.

Ignore seasonal or pet allergies, preference diets ("I try to avoid gluten") and jokes.

## An incident
An incident is a relevant review whose incident_severity is mild, moderate or severe and whose
account_type is firsthand or secondhand. Hypothetical accounts are never incidents, however alarming
they sound. A refusal to serve ("they could not guarantee it was nut-free") is not an incident: it is
the restaurant being careful.

## Rules (apply in order; the first rule that matches decides)
R1 Critical Risk - at least one firsthand incident of severity severe (for example the reviewer needed
   an EpiPen or went to the emergency room after eating here).
R2 High Risk - at least one firsthand incident of severity mild or moderate.
R3 High Risk - at least one secondhand incident of any severity (mild, moderate or severe).
R4 Low Risk - none of the above: no incidents at all. Reviews that praise careful handling, report a
   refusal, or only warn hypothetically lead to Low Risk.

Aggravating details - a false assurance (staff said a dish was safe and it was not) or a dismissive staff
response - must be cited in your reasoning when present, but they do not change the verdict on their own.
Accommodating staff do not lower the verdict of an incident either: what happened to the diner counts.

## Evidence
Cite every incident you rely on as an evidence item with its review_id, the field (incident_severity),
your judgement (the severity) and a short verbatim snippet from the review. When the verdict is Low Risk,
cite the most relevant allergy-related reviews if there are any, or none if no review mentions allergies.

## Output
Return the JSON object described in the instructions: verdict, evidences, justification with the
triggered rule (R1, R2, R3 or R4) and the evidence ids it rests on, and other_notes for anything a human
reviewer should know (for example conflicting accounts or an incident that is many years old).
"""

# --------------------------------------------------------------------------------------------------------
# Banks for businesses, users and review prose.
# --------------------------------------------------------------------------------------------------------

# (city, state, latitude, longitude, postal prefix) - cities of the public Yelp dataset.
# fmt: off
CITIES: tuple[tuple[str, str, float, float, str], ...] = (
    ("Philadelphia", "PA", 39.9526, -75.1652, "191"),
    ("Tampa", "FL", 27.9506, -82.4572, "336"),
    ("Indianapolis", "IN", 39.7684, -86.1581, "462"),
    ("Nashville", "TN", 36.1627, -86.7816, "372"),
    ("Tucson", "AZ", 32.2226, -110.9747, "857"),
    ("New Orleans", "LA", 29.9511, -90.0715, "701"),
    ("Saint Louis", "MO", 38.6270, -90.1994, "631"),
    ("Reno", "NV", 39.5296, -119.8138, "895"),
    ("Boise", "ID", 43.6150, -116.2023, "837"),
    ("Santa Barbara", "CA", 34.4208, -119.6982, "931"),
    ("Clearwater", "FL", 27.9659, -82.8001, "337"),
    ("Edmonton", "AB", 53.5461, -113.4938, "T5"),
)

STREETS = (
    "Main St", "Market St", "Walnut St", "Chestnut St", "S Broad St", "N 3rd St", "Oak Ave", "Maple Ave",
    "W Washington St", "E 4th Ave", "Magazine St", "Frankford Ave", "Passyunk Ave", "Central Ave",
    "State St", "Fulton St", "Lincoln Blvd", "Grand Ave", "Harbor Dr", "Sunset Blvd", "Park Rd",
    "University Ave", "Canal St", "Elm St", "Riverside Dr", "Mill St",
)


@dataclass(frozen=True)
class Cuisine:
    """One kind of restaurant: what it is called, how Yelp categorizes it and what people order there."""

    categories: str
    name_words: tuple[str, ...]
    name_suffixes: tuple[str, ...]
    dishes: tuple[str, ...]


CUISINES: tuple[Cuisine, ...] = (
    Cuisine(
        "Thai, Restaurants",
        ("Golden Lotus", "Siam", "Bangkok Garden", "Thai Orchid", "Basil Leaf", "Chiang Mai", "Lemongrass"),
        ("Thai Kitchen", "Thai Cuisine", "Thai Bistro", "Thai"),
        ("pad thai", "green curry", "drunken noodles", "tom yum soup", "massaman curry", "chicken satay",
         "papaya salad", "mango sticky rice", "pad see ew", "larb"),
    ),
    Cuisine(
        "Italian, Pizza, Restaurants",
        ("Mama Rosa's", "Trattoria Lucca", "Bella Notte", "Vito's", "Il Forno", "Nonna's", "Osteria Verde"),
        ("Trattoria", "Ristorante", "Italian Kitchen", "Pasta House", ""),
        ("lasagna", "chicken parm", "cacio e pepe", "margherita pizza", "carbonara", "veal piccata",
         "gnocchi", "tiramisu", "calamari", "penne alla vodka"),
    ),
    Cuisine(
        "Mexican, Tacos, Restaurants",
        ("El Jefe", "La Casita", "Taqueria Jalisco", "Casa Azul", "Los Compadres", "El Rancho", "Tres Hermanos"),
        ("Taqueria", "Mexican Grill", "Cantina", "Cocina", ""),
        ("carne asada tacos", "al pastor tacos", "chicken mole", "carnitas burrito", "chile relleno",
         "elote", "queso fundido", "fish tacos", "enchiladas verdes", "churros"),
    ),
    Cuisine(
        "Japanese, Sushi Bars, Restaurants",
        ("Sakura", "Koi", "Umi", "Kiku", "Hana", "Tokyo Garden", "Sushi Ichiban"),
        ("Sushi", "Sushi & Ramen", "Japanese Restaurant", "Izakaya"),
        ("spicy tuna roll", "dragon roll", "tonkotsu ramen", "salmon nigiri", "chicken katsu", "gyoza",
         "miso soup", "tempura udon", "unagi don", "edamame"),
    ),
    Cuisine(
        "American (New), Burgers, Restaurants",
        ("The Rusty Spoon", "Copper Kettle", "Union Tavern", "Blue Door", "Smoke & Barrel", "Hilltop",
         "The Local"),
        ("Kitchen", "Burger Bar", "Tavern", "Grill", "Eatery"),
        ("smash burger", "fried chicken sandwich", "mac and cheese", "truffle fries", "wedge salad",
         "brisket sandwich", "onion rings", "steak frites", "chicken wings", "pork belly bites"),
    ),
    Cuisine(
        "Indian, Restaurants",
        ("Taj", "Saffron", "Masala", "Bombay", "Namaste", "Tandoor", "Spice Route"),
        ("Indian Cuisine", "Indian Kitchen", "Palace", "Grill"),
        ("chicken tikka masala", "saag paneer", "lamb vindaloo", "garlic naan", "chana masala",
         "butter chicken", "vegetable samosas", "biryani", "korma", "aloo gobi"),
    ),
    Cuisine(
        "Chinese, Restaurants",
        ("Golden Dragon", "Jade Garden", "Panda", "Great Wall", "Lucky Star", "Red Lantern", "Szechuan House"),
        ("Chinese Restaurant", "Kitchen", "Noodle House", "Dim Sum"),
        ("kung pao chicken", "soup dumplings", "mapo tofu", "General Tso's chicken", "dan dan noodles",
         "walnut shrimp", "beef chow fun", "hot and sour soup", "scallion pancakes", "char siu bao"),
    ),
    Cuisine(
        "Mediterranean, Greek, Restaurants",
        ("Olive Tree", "Santorini", "Zaytoon", "Athena", "Aegean", "Little Beirut", "Mykonos"),
        ("Grill", "Mediterranean Kitchen", "Taverna", "Cafe"),
        ("lamb gyro", "chicken shawarma", "falafel plate", "hummus", "spanakopita", "moussaka",
         "baklava", "grilled octopus", "tabbouleh", "baba ganoush"),
    ),
    Cuisine(
        "Barbeque, Southern, Restaurants",
        ("Smokey Joe's", "Big Pig", "Hickory Pit", "Lone Star", "Bubba's", "Oak & Ember", "Pappy's"),
        ("BBQ", "Smokehouse", "Bar-B-Q", "Barbecue"),
        ("brisket", "pulled pork", "burnt ends", "baby back ribs", "collard greens", "cornbread",
         "burnt end chili", "smoked sausage", "mac and cheese", "hush puppies"),
    ),
    Cuisine(
        "Vietnamese, Restaurants",
        ("Pho Saigon", "Little Saigon", "Pho Hoa", "Banh Mi", "Lotus", "Hanoi", "Mekong"),
        ("Vietnamese Restaurant", "Pho", "Kitchen", "Noodle Bar"),
        ("pho tai", "banh mi", "bun cha", "spring rolls", "vermicelli bowl", "shaking beef",
         "broken rice", "banh xeo", "lemongrass chicken", "crispy egg rolls"),
    ),
    Cuisine(
        "Seafood, Cajun/Creole, Restaurants",
        ("Crab Shack", "Boudreaux's", "Pier 21", "The Oyster Bar", "Gulf Coast", "Catch", "Mudbug"),
        ("Seafood", "Oyster House", "Fish House", "Kitchen"),
        ("shrimp po'boy", "gumbo", "crawfish boil", "blackened redfish", "crab cakes", "jambalaya",
         "char-grilled oysters", "fried catfish", "lobster roll", "beignets"),
    ),
    Cuisine(
        "Breakfast & Brunch, Cafes, Restaurants",
        ("Sunny Side", "The Early Bird", "Morning Glory", "Over Easy", "Biscuit Love", "Egg & I", "Daybreak"),
        ("Cafe", "Diner", "Brunch House", "Kitchen"),
        ("chicken and waffles", "eggs Benedict", "buttermilk pancakes", "breakfast burrito",
         "avocado toast", "shrimp and grits", "French toast", "biscuits and gravy", "huevos rancheros",
         "cinnamon roll"),
    ),
)

FIRST_NAMES = (
    "Jennifer", "Michael", "Sarah", "David", "Jessica", "Chris", "Ashley", "Matt", "Emily", "John", "Amanda",
    "Brian", "Melissa", "Kevin", "Nicole", "Jason", "Stephanie", "Ryan", "Lauren", "Mike", "Rachel", "Dan",
    "Megan", "Andrew", "Elizabeth", "Steve", "Maria", "Jose", "Linh", "Priya", "Wei", "Aisha", "Carlos",
    "Hannah", "Tyler", "Olivia", "Marcus", "Keisha", "Sam", "Tina", "Greg", "Rosa", "Ahmed", "Yuki", "Ben",
    "Kate", "Omar", "Grace", "Nate", "Julia", "Derek", "Monica", "Alex", "Erin", "Luis", "Heather",
)

SERVER_NAMES = ("Jess", "Marco", "Tony", "Kayla", "Danny", "Sofia", "Ray", "Brittany", "Luis", "Mia", "Eddie")
COMPANIONS = (
    "my husband", "my wife", "my boyfriend", "my girlfriend", "a friend", "my parents", "coworkers",
    "my sister", "the kids", "a big group", "my roommate", "a client", "my mom",
)
DRINKS = ("margarita", "old fashioned", "house red", "iced tea", "local IPA", "lemonade", "sangria", "latte")
DESSERTS = ("cheesecake", "chocolate cake", "bread pudding", "key lime pie", "creme brulee", "gelato")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEKDAYS = DAYS

Tone = str  # "pos" | "mix" | "neg"

OPENERS: dict[Tone, tuple[str, ...]] = {
    "pos": (
        "Came here for dinner with {companion} on a {day} night and left very happy.",
        "I've been meaning to try {name} for months and it did not disappoint.",
        "This has quickly become one of our favorite spots in {city}.",
        "Stopped in for a late lunch after running errands and what a find.",
        "We celebrated a birthday here last weekend and everything went smoothly.",
        "Third visit now and it keeps getting better.",
        "A friend recommended {name} and I owe her one.",
        "Finally a place in this neighborhood that gets it right.",
    ),
    "mix": (
        "Came here with {companion} on a {day} and it was a bit of a mixed bag.",
        "I wanted to love {name}, and parts of the meal were great, but not all of it.",
        "Decent spot if you're in the area, though I wouldn't drive across {city} for it.",
        "We stopped in for dinner after a show and had an okay experience overall.",
        "I've been here a few times and it's hit or miss depending on the night.",
        "Solid three stars: some things shine, others need work.",
        "Tried {name} for the first time on a {day} and I'm still on the fence.",
    ),
    "neg": (
        "Really disappointed with our visit to {name} this {day}.",
        "I hate writing bad reviews, but this one was rough.",
        "We used to come here all the time, but it has gone downhill.",
        "Came in with {companion} and honestly regret not going somewhere else.",
        "Save your money and skip this one.",
        "Not sure how this place has the ratings it does.",
        "Went here based on the reviews and left confused and hungry.",
    ),
}

FOOD: dict[Tone, tuple[str, ...]] = {
    "pos": (
        "The {dish} was outstanding, full of flavor and clearly made from scratch.",
        "I ordered the {dish} and it was easily the best version I've had in {city}.",
        "{companion_cap} got the {dish2} and kept stealing bites of my {dish}, which says it all.",
        "Portions are generous; the {dish} alone could feed two people.",
        "Don't skip the {dish2} - perfectly seasoned and still hot when it hit the table.",
        "Everything tasted fresh, and the {dish} had just the right amount of heat.",
        "We split the {dish} and the {dish2} and cleaned both plates.",
        "The {dessert} at the end was a nice touch and not too sweet.",
        "Their {drink} was well made and paired nicely with the {dish}.",
    ),
    "mix": (
        "The {dish} was good but a little under-seasoned for my taste.",
        "I liked the {dish2}, but the {dish} came out lukewarm.",
        "Flavors were fine, nothing that blew me away; the {dish} was the highlight.",
        "The {dish} was tasty, though the portion felt small for the price.",
        "{companion_cap} enjoyed the {dish2}; mine was a bit too salty.",
        "The {dessert} looked better than it tasted.",
        "The {drink} was watered down, but the {dish} made up for it somewhat.",
    ),
    "neg": (
        "The {dish} was bland and tasted like it had been sitting under a heat lamp.",
        "My {dish} came out cold and the {dish2} was greasy and soggy.",
        "For a place known for its {dish}, this was shockingly mediocre.",
        "The {dish2} was overcooked to the point of being chewy.",
        "Everything on the plate was drowning in sauce to hide how dry it was.",
        "The {drink} tasted like it was made with a mix, and the {dessert} was stale.",
        "We sent the {dish} back and the replacement wasn't any better.",
    ),
}

SERVICE: dict[Tone, tuple[str, ...]] = {
    "pos": (
        "Our server {server} was friendly, attentive and knew the menu inside out.",
        "Service was quick and warm without being pushy.",
        "{server} checked on us at just the right moments and kept our drinks full.",
        "The staff clearly care about the place, and it shows.",
        "The owner stopped by our table to chat, which was a nice touch.",
    ),
    "mix": (
        "Service was friendly but slow, and we had to flag someone down for refills.",
        "{server} was nice enough, just stretched thin with too many tables.",
        "The staff seemed a little disorganized, but they were apologetic about it.",
        "Our order was mixed up once, though they fixed it quickly.",
    ),
    "neg": (
        "Our server disappeared for twenty minutes at a time and never apologized.",
        "The hostess was rude from the moment we walked in.",
        "We had to ask three times for water, and the check took forever.",
        "Staff were more interested in their phones than in the customers.",
        "When we pointed out the mistake, the manager got defensive instead of fixing it.",
    ),
}

AMBIENCE: dict[Tone, tuple[str, ...]] = {
    "pos": (
        "The dining room is cozy, with good lighting and music at a volume that lets you talk.",
        "Great patio for a warm evening; we sat outside and watched the street.",
        "It's a small place but very clean and nicely decorated.",
        "The vibe is relaxed and casual - perfect for a weeknight dinner.",
    ),
    "mix": (
        "The space is cute but gets very loud once it fills up.",
        "Seating is cramped; we were practically sitting at the next table.",
        "Decor is a little dated, but it's clean enough.",
        "Parking can be tricky; we ended up circling the block twice.",
    ),
    "neg": (
        "The tables were sticky and the floor hadn't been swept.",
        "It was freezing inside and the music was blaring.",
        "The bathroom was a mess, which makes you wonder about the kitchen.",
        "The whole place smelled like old fryer oil.",
    ),
}

WAIT: dict[Tone, tuple[str, ...]] = {
    "pos": (
        "We were seated right away and the food came out in about {few} minutes.",
        "Even on a busy {day} the wait for a table was only about {few} minutes.",
        "Takeout was ready exactly when they said it would be.",
    ),
    "mix": (
        "We waited about {minutes} minutes for a table, which is fair for a {day} night.",
        "Food took a while to come out, around {minutes} minutes, but it was hot.",
        "They don't take reservations, so expect a wait on weekends.",
    ),
    "neg": (
        "We waited over {minutes} minutes for our food with no explanation.",
        "Despite a reservation we stood by the door for {minutes} minutes.",
        "Our takeout order was {minutes} minutes late and missing an item.",
    ),
}

PRICE: dict[Tone, tuple[str, ...]] = {
    "pos": (
        "Prices are very reasonable; dinner for two came to about ${price} before tip.",
        "Great value for the quality, and the lunch specials are a steal.",
        "Happy hour is a great deal if you can make it before six.",
    ),
    "mix": (
        "It's a bit pricey for what you get, around ${price} for two of us.",
        "Prices have crept up since my last visit, but it's still in line with the area.",
        "Not cheap, not outrageous - about ${price} with drinks.",
    ),
    "neg": (
        "We paid ${price} for two people and left feeling ripped off.",
        "Way overpriced for the portion sizes.",
        "They added a surprise service charge to the bill that nobody mentioned.",
    ),
}

CLOSERS: dict[Tone, tuple[str, ...]] = {
    "pos": (
        "We'll definitely be back to work our way through the rest of the menu.",
        "Highly recommend, and I can't wait to bring my family here.",
        "Five stars, no notes.",
        "Already planning our next visit.",
    ),
    "mix": (
        "I'd give it another try, but I'm not rushing back.",
        "Worth a visit if you're nearby, just manage your expectations.",
        "Three stars for now; I hope they sort out the kinks.",
    ),
    "neg": (
        "We won't be returning.",
        "There are much better options in {city}.",
        "Two stars only because the drinks were okay.",
        "Hard pass from me.",
    ),
}

SHORT_REVIEWS: dict[Tone, tuple[str, ...]] = {
    "pos": (
        "Amazing {dish}, friendly staff. Will be back soon!",
        "Best {dish} in {city}, hands down. Go!",
        "Quick, tasty and cheap. Love the {dish} here.",
        "Great spot for lunch. The {dish} never disappoints.",
    ),
    "mix": (
        "Food was fine, service slow. Probably won't rush back.",
        "Okay {dish}, nothing special. Nice patio though.",
        "Decent, a little overpriced for what you get.",
    ),
    "neg": (
        "Cold food, rude service. Not coming back here again.",
        "Waited an hour for a soggy {dish}. Never again.",
        "Overpriced and bland. Skip it and go elsewhere.",
    ),
}

# Allergy phrase banks. Every allergy paragraph names the allergy explicitly; non-allergy banks never use
# the words "allerg", "celiac" or "EpiPen", so relevance is unambiguous for tests and for the models.


@dataclass(frozen=True)
class Allergen:
    """An allergen with the words reviewers use for it and the hidden ingredients that cause incidents."""

    key: str
    names: tuple[str, ...]
    free_word: str
    hidden: tuple[str, ...]


ALLERGENS: tuple[Allergen, ...] = (
    Allergen("nut", ("peanut allergy", "tree nut allergy", "severe nut allergy", "nut allergy"), "nut-free",
             ("crushed peanuts", "cashews", "peanut oil", "almond flour", "a pesto with pine nuts")),
    Allergen("gluten", ("gluten allergy", "wheat allergy", "celiac-level gluten allergy"),
             "gluten-free", ("regular soy sauce", "a flour dusting", "croutons", "breadcrumbs",
                             "a wheat-based thickener")),
    Allergen("shellfish", ("shellfish allergy", "severe shellfish allergy", "shrimp allergy"),
             "shellfish-free", ("shrimp paste", "a few shrimp", "crab", "shrimp stock", "oyster sauce")),
    Allergen("dairy", ("dairy allergy", "milk allergy", "severe dairy allergy"), "dairy-free",
             ("butter", "cream", "parmesan", "a cheese sauce", "whey")),
)

# Person forms: firsthand speaks as "I", secondhand about a companion.
RELATIONS = (
    ("my sister", "she", "her", "her"), ("my husband", "he", "his", "him"), ("my wife", "she", "her", "her"),
    ("my son", "he", "his", "him"), ("my daughter", "she", "her", "her"), ("a coworker", "she", "her", "her"),
    ("my friend", "he", "his", "him"), ("my roommate", "she", "her", "her"), ("my dad", "he", "his", "him"),
)

ALLERGY_INTRO_FIRST = (
    "I have a {allergy}, so I always tell the server before ordering.",
    "As someone with a {allergy}, I'm careful about where I eat.",
    "Quick note for fellow diners: I have a {allergy} and I mentioned it when we sat down.",
    "I live with a {allergy}, which makes eating out stressful.",
)
ALLERGY_INTRO_SECOND = (
    "{rel_cap} has a {allergy}, and we told the server as soon as we ordered.",
    "We were dining with {rel}, who has a {allergy}.",
    "{rel_cap} came along, and {sub} has a {allergy}.",
)
ALLERGY_HYPOTHETICAL = (
    "Heads up for anyone with a {allergy}: the {dish} is made with {hidden}, so ask before you order.",
    "If you have a {allergy}, I would think twice here; the kitchen is tiny and everything seems to share "
    "the same fryer.",
    "I don't have a {allergy} myself, but I noticed {hidden} in almost everything, so anyone who does "
    "should be careful.",
    "Anyone with a {allergy} could easily get sick here - the menu lists no allergens at all and the "
    "{dish} has {hidden}.",
)
ASSURANCE_TRUE = (
    "The server assured us the {dish} was completely {free}.",
    "The menu marks the {dish} as {free}, and the server confirmed it.",
    "The manager told us the kitchen was '100% {free}' for that dish.",
)
ASSURANCE_UNKNOWN = (
    "There was a little symbol next to some dishes on the menu, but I'm not sure whether it meant {free}.",
    "I think the server said something about {free} options, but it was loud and I couldn't really hear.",
)
# Incident sentences by severity; {Sub}/{sub}/{pos}/{obj} are "I"/"my"/"me" or the companion's pronouns.
INCIDENT: dict[str, tuple[str, ...]] = {
    "none": (
        "Everything came out exactly as requested and {sub} had no reaction at all.",
        "{Sub} ate the {dish} without any problems whatsoever.",
        "No issues at all - {sub} felt completely fine afterwards.",
    ),
    "mild": (
        "A few bites into the {dish}, {pos} lips started tingling and {sub} got a little itchy; it passed after "
        "an antihistamine. Turns out it had {hidden}.",
        "Afterwards {sub} had a few hives on {pos} arms, nothing dramatic, but the {dish} clearly had {hidden} "
        "in it.",
        "{Sub} noticed an itchy throat halfway through the {dish} and stopped eating; it was gone within an "
        "hour.",
    ),
    "moderate": (
        "About half an hour later {sub} broke out in hives all over and spent the night with stomach cramps "
        "and vomiting. The {dish} had {hidden} in it.",
        "{Pos_cap} face swelled up and {sub} was sick for most of the night; we later found out the {dish} "
        "was made with {hidden}.",
        "Within an hour {sub} was covered in hives and throwing up - the {dish} obviously had {hidden}.",
    ),
    "severe": (
        "Within minutes {pos} throat started closing up; we had to use the EpiPen and call an ambulance. The "
        "{dish} had {hidden} in it.",
        "{Sub} went into anaphylaxis at the table, needed epinephrine and spent the night in the ER. The "
        "{dish} turned out to contain {hidden}.",
        "{Sub} could barely breathe by the time we got to the car and ended up in the emergency room. The "
        "kitchen had used {hidden} in the {dish}.",
    ),
}
# Staff responses. "Before" sentences describe handling at ordering time (used when nothing happened, and
# for refusals and unknown responses); "after" sentences describe the reaction to an incident.
STAFF_BEFORE: dict[str, tuple[str, ...]] = {
    "none": (),
    "accommodated": (
        "The staff were great about it: the manager came over, double-checked every ingredient with the "
        "kitchen and had the dish made on a separate station.",
        "Our server took it seriously, walked us through which dishes were safe and checked with the chef.",
        "The chef came out personally to go over the menu and suggested a couple of safe options.",
    ),
    "refused": (
        "The server said the kitchen could not guarantee the {dish} would be {free} and would not make it for "
        "us, so we ordered something else.",
        "They politely declined to adapt the dish because they could not promise it was {free}.",
    ),
    "dismissive": (
        "When we asked about it, the server just shrugged and said 'a little bit won't hurt you.'",
        "The server rolled her eyes and said the cooks don't really have time for special requests.",
    ),
    "unknown": (
        "We mentioned it to the staff, but I honestly don't know whether they passed it on to the kitchen.",
        "The server wrote something down when we mentioned it; what happened after that, who knows.",
    ),
}
STAFF_AFTER: dict[str, tuple[str, ...]] = {
    "none": (),
    "accommodated": (
        "To their credit, the manager apologized, comped our meal and called the next day to check on us.",
        "The staff were genuinely upset, helped us right away and later explained how the mistake happened.",
    ),
    "dismissive": (
        "When we told the server what happened, she just shrugged and said 'a little bit won't hurt you.'",
        "The manager basically said it wasn't their problem and that we should have eaten somewhere else.",
        "Nobody on staff seemed to care; the cook rolled his eyes when the server told him.",
    ),
    "unknown": STAFF_BEFORE["unknown"],
}
# fmt: on


@dataclass(frozen=True)
class AllergyLabel:
    """What was planted in one review: the G1a field values that a perfect judge would extract."""

    allergen: Allergen
    incident_severity: str
    account_type: str
    assurance_claim: str
    staff_response: str

    @property
    def is_incident(self) -> bool:
        """An incident per the policy: an actual reaction, reported firsthand or secondhand."""
        return self.incident_severity != "none" and self.account_type != "hypothetical"


# --------------------------------------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------------------------------------


def _new_id(rng: random.Random, used: set[str]) -> str:
    """A Yelp-style 22-char id, unique among all ids of this workspace (business, review and user ids)."""
    while True:
        candidate = "".join(rng.choices(ID_ALPHABET, k=ID_LENGTH))
        if candidate not in used:
            used.add(candidate)
            return candidate


def _timestamp(rng: random.Random, year_lo: int, year_hi: int) -> str:
    """A "YYYY-MM-DD HH:MM:SS" stamp; day capped at 28 so every month is valid without a calendar."""
    return (
        f"{rng.randint(year_lo, year_hi):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    )


def _fill(template: str, rng: random.Random, ctx: dict[str, str], cuisine: Cuisine) -> str:
    """Fill a template; dishes, names and numbers are drawn afresh per sentence so repeats read naturally."""
    dish, dish2 = rng.sample(cuisine.dishes, 2)
    companion = rng.choice(COMPANIONS)
    values = {
        **ctx,
        "dish": dish,
        "dish2": dish2,
        "dessert": rng.choice(DESSERTS),
        "drink": rng.choice(DRINKS),
        "server": rng.choice(SERVER_NAMES),
        "companion": companion,
        "companion_cap": companion[0].upper() + companion[1:],
        "day": rng.choice(DAYS),
        "few": str(rng.choice((5, 10, 10, 15, 20))),
        "minutes": str(rng.choice((20, 25, 30, 40, 45, 60))),
        "price": str(rng.randrange(30, 160, 5)),
    }
    return template.format_map(values)


def _tone(stars: float) -> Tone:
    """Prose tone follows the star rating, as in real reviews."""
    if stars >= 4.0:
        return "pos"
    if stars <= 2.0:
        return "neg"
    return "mix"


# --------------------------------------------------------------------------------------------------------
# Review text.
# --------------------------------------------------------------------------------------------------------


def _allergy_paragraph(rng: random.Random, label: AllergyLabel, cuisine: Cuisine) -> str:
    """The allergy passage of a review, written so that each planted field value is recoverable."""
    allergen = label.allergen
    dish = rng.choice(cuisine.dishes)
    ctx = {
        "allergy": rng.choice(allergen.names),
        "free": allergen.free_word,
        "hidden": rng.choice(allergen.hidden),
        "dish": dish,
    }
    if label.account_type == "hypothetical":
        parts = [rng.choice(ALLERGY_HYPOTHETICAL).format_map(ctx)]
        if label.assurance_claim == "unknown":
            parts.append(rng.choice(ASSURANCE_UNKNOWN).format_map(ctx))
        return " ".join(parts)

    if label.account_type == "firsthand":
        person = {"Sub": "I", "sub": "I", "pos": "my", "Pos_cap": "My", "obj": "me"}
        intro = rng.choice(ALLERGY_INTRO_FIRST)
    else:
        rel, sub, pos, obj = rng.choice(RELATIONS)
        person = {
            "Sub": sub.capitalize(),
            "sub": sub,
            "pos": pos,
            "Pos_cap": pos.capitalize(),
            "obj": obj,
            "rel": rel,
            "rel_cap": rel[0].upper() + rel[1:],
        }
        intro = rng.choice(ALLERGY_INTRO_SECOND)
    ctx.update(person)
    parts = [intro.format_map(ctx)]
    if label.assurance_claim == "true":
        parts.append(rng.choice(ASSURANCE_TRUE).format_map(ctx))
    elif label.assurance_claim == "unknown":
        parts.append(rng.choice(ASSURANCE_UNKNOWN).format_map(ctx))
    # Refusals and unanswered requests happen at ordering time; other responses follow what happened.
    before = label.incident_severity == "none" or label.staff_response in ("refused", "unknown")
    bank = (STAFF_BEFORE if before else STAFF_AFTER)[label.staff_response]
    staff = rng.choice(bank).format_map(ctx) if bank else ""
    if staff and before:
        parts.append(staff)
    parts.append(rng.choice(INCIDENT[label.incident_severity]).format_map(ctx))
    if staff and not before:
        parts.append(staff)
    return " ".join(parts)


def _review_text(
    rng: random.Random, cuisine: Cuisine, stars: float, ctx: dict[str, str], label: AllergyLabel | None
) -> str:
    """Review prose of a log-normal length (median ~400 chars, 39..2,000) in the tone of its stars."""
    tone = _tone(stars)
    target = int(rng.lognormvariate(math.log(MEDIAN_TEXT_CHARS), 0.62))
    target = max(MIN_TEXT_CHARS, min(MAX_TEXT_CHARS, target))
    if label is None and target < 100:
        text = _fill(rng.choice(SHORT_REVIEWS[tone]), rng, ctx, cuisine)
        return text if len(text) >= MIN_TEXT_CHARS else text + " Enough said."

    # Shuffle each bank once and consume it, so no sentence template repeats inside one review.
    banks = {}
    for name, bank in (("food", FOOD), ("service", SERVICE), ("ambience", AMBIENCE), ("wait", WAIT), ("price", PRICE)):
        templates = list(bank[tone])
        rng.shuffle(templates)
        banks[name] = templates
    order = ["food", "service", "food", "ambience", "wait", "price", "food", "service", "food", "ambience"]
    body: list[str] = []
    allergy = _allergy_paragraph(rng, label, cuisine) if label is not None else ""
    opener = _fill(rng.choice(OPENERS[tone]), rng, ctx, cuisine)
    closer = _fill(rng.choice(CLOSERS[tone]), rng, ctx, cuisine) if rng.random() < 0.7 else ""
    length = len(opener) + len(allergy) + len(closer)
    i = 0
    while length < target:
        name = order[i % len(order)] if i < len(order) else rng.choice(tuple(banks))
        i += 1
        if not any(banks.values()):
            break
        if not banks[name]:
            continue
        sentence = _fill(banks[name].pop(), rng, ctx, cuisine)
        if length + len(sentence) + 1 > MAX_TEXT_CHARS - 40:
            break
        body.append(sentence)
        length += len(sentence) + 1

    sentences = [opener, *body]
    if allergy:
        # The allergy story usually comes early, right after the opener, sometimes mid-review.
        sentences.insert(rng.choice((1, 1, 2, len(sentences))) if len(sentences) > 1 else 1, allergy)
    if closer:
        sentences.append(closer)
    # Long reviews are written in paragraphs, like the real ones.
    paragraphs: list[str] = []
    current: list[str] = []
    for sentence in sentences:
        current.append(sentence)
        if len(" ".join(current)) > rng.randint(250, 500):
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    text = "\n\n".join(paragraphs)
    while len(text) > MAX_TEXT_CHARS and body:  # only possible with a long allergy passage
        body.pop()
        text = " ".join(s for s in [opener, allergy, *body, closer] if s)
    return text


# --------------------------------------------------------------------------------------------------------
# Allergy planting and ground truth.
# --------------------------------------------------------------------------------------------------------


def _label(rng: random.Random, severity: str, account: str) -> AllergyLabel:
    """A label with plausible assurance/staff values for a given severity and account type."""
    allergen = rng.choice(ALLERGENS)
    if account == "hypothetical":
        # A warning to others: nobody was served, so no staff response to report.
        return AllergyLabel(allergen, "none", account, rng.choice(("false", "false", "unknown")), "none")
    if severity == "none":
        staff = rng.choice(("accommodated", "accommodated", "accommodated", "refused", "none", "unknown", "dismissive"))
        assurance = rng.choice(("false", "false", "true", "unknown")) if staff != "refused" else "false"
    else:
        staff = rng.choice(("none", "dismissive", "dismissive", "accommodated", "unknown"))
        # An incident after "it's nut-free" is the classic false-assurance story.
        assurance = rng.choice(("true", "true", "false", "false", "unknown"))
    return AllergyLabel(allergen, severity, account, assurance, staff)


def _plan_allergy(rng: random.Random, target: str, n_reviews: int) -> list[AllergyLabel]:
    """The allergy labels of one restaurant, chosen so that its rules-derived verdict is ``target``."""
    n_mentions = sum(rng.random() < ALLERGY_SHARE for _ in range(n_reviews))
    labels: list[AllergyLabel] = []
    if target == "Critical Risk":
        labels.append(_label(rng, "severe", "firsthand"))
        if rng.random() < 0.3:
            labels.append(
                _label(rng, rng.choice(("mild", "moderate", "severe")), rng.choice(("firsthand", "secondhand")))
            )
    elif target == "High Risk":
        for _ in range(1 if rng.random() < 0.7 else 2):
            if rng.random() < 0.7:
                labels.append(_label(rng, rng.choice(("mild", "moderate", "moderate")), "firsthand"))
            else:
                labels.append(_label(rng, rng.choice(("mild", "moderate", "severe")), "secondhand"))
    while len(labels) < min(n_mentions, n_reviews):
        # Non-incident mentions: careful kitchens, refusals, uneventful meals, hypothetical warnings.
        account = rng.choice(("firsthand", "firsthand", "secondhand", "hypothetical"))
        labels.append(_label(rng, "none", account))
    return labels[:n_reviews]


def _verdict(labels: list[tuple[str, AllergyLabel]]) -> tuple[str, str]:
    """Apply the agenda's rules R1-R4 (see POLICY_PROMPT) to one restaurant's labelled reviews."""
    incidents = [lab for _, lab in labels if lab.is_incident]
    if any(lab.account_type == "firsthand" and lab.incident_severity == "severe" for lab in incidents):
        return "Critical Risk", "R1_firsthand_severe_incident"
    if any(lab.account_type == "firsthand" for lab in incidents):
        return "High Risk", "R2_firsthand_mild_or_moderate_incident"
    if incidents:
        return "High Risk", "R3_secondhand_incident"
    return "Low Risk", "R4_no_incidents"


def _modifiers(label: AllergyLabel) -> list[str]:
    """Aggravating or mitigating details of an incident, as the GT lists them beside the severity."""
    mods: list[str] = [f"allergen:{label.allergen.key}"]
    if label.assurance_claim == "true":
        mods.append("false_assurance")
    if label.staff_response == "dismissive":
        mods.append("dismissive_staff")
    elif label.staff_response == "accommodated":
        mods.append("staff_accommodated")
    return mods


def _class_quota(rng: random.Random, n: int) -> list[str]:
    """Exactly ~60/30/10 Low/High/Critical, shuffled; with >= 3 restaurants every class appears."""
    n_crit = round(n * SHARE_CRITICAL)
    n_high = round(n * SHARE_HIGH)
    if n >= 3:
        n_crit, n_high = max(1, n_crit), max(1, n_high)
    n_high = min(n_high, n - n_crit)
    classes = ["Critical Risk"] * n_crit + ["High Risk"] * n_high + ["Low Risk"] * (n - n_crit - n_high)
    rng.shuffle(classes)
    return classes


# --------------------------------------------------------------------------------------------------------
# Records.
# --------------------------------------------------------------------------------------------------------


def _hours(rng: random.Random) -> dict[str, str]:
    """Yelp-style opening hours ("11:30-22:0": minutes not zero-padded), some days closed."""
    open_h = rng.choice((7, 10, 11, 11, 16, 17))
    open_m = rng.choice((0, 0, 30))
    close_h = min(23, open_h + rng.choice((5, 8, 10, 11, 12)))
    hours: dict[str, str] = {}
    closed = rng.choice(((), ("Monday",), ("Sunday",), ("Monday", "Tuesday")))
    for day in WEEKDAYS:
        if day in closed:
            continue
        late = 1 if day in ("Friday", "Saturday") and close_h < 23 else 0
        hours[day] = f"{open_h}:{open_m}-{close_h + late}:0"
    return hours


def _attributes(rng: random.Random, cuisine: Cuisine) -> dict[str, str]:
    """Attributes as the Yelp dump has them: strings, several holding Python-literal text."""

    def b() -> str:
        return rng.choice(("True", "False"))

    attrs = {
        "RestaurantsPriceRange2": str(rng.choice((1, 2, 2, 2, 3, 4))),
        "RestaurantsTakeOut": b(),
        "RestaurantsDelivery": b(),
        "RestaurantsReservations": b(),
        "GoodForKids": b(),
        "OutdoorSeating": b(),
        "BusinessAcceptsCreditCards": "True",
        "WiFi": rng.choice(("u'free'", "u'no'", "'free'", "'no'")),
        "Alcohol": rng.choice(("u'full_bar'", "u'beer_and_wine'", "u'none'", "'none'")),
        "NoiseLevel": rng.choice(("u'average'", "u'quiet'", "u'loud'", "'average'")),
        "BusinessParking": (f"{{'garage': {b()}, 'street': {b()}, 'validated': False, 'lot': {b()}, 'valet': False}}"),
        "Ambience": (
            f"{{'romantic': False, 'intimate': {b()}, 'classy': {b()}, 'hipster': {b()}, "
            f"'divey': False, 'touristy': False, 'trendy': {b()}, 'upscale': False, 'casual': {b()}}}"
        ),
        "GoodForMeal": (
            f"{{'dessert': False, 'latenight': {b()}, 'lunch': {b()}, 'dinner': True, "
            f"'brunch': {'True' if 'Brunch' in cuisine.categories else 'False'}, 'breakfast': False}}"
        ),
    }
    if rng.random() < 0.3:
        attrs["HasTV"] = b()
    return attrs


def _business(rng: random.Random, used: set[str], cuisine: Cuisine, stars: float) -> dict[str, Any]:
    """A business record with every field of the upstream dataset, in the dump's field order."""
    city, state, lat, lon, postal = rng.choice(CITIES)
    word = rng.choice(cuisine.name_words)
    suffix = rng.choice(cuisine.name_suffixes)
    name = word if not suffix or suffix in word else f"{word} {suffix}"
    if postal.startswith("T"):
        postal_code = f"{postal}{rng.choice('ABCEGHJKLMNPRSTVWXYZ')} {rng.randint(0, 9)}{rng.choice('ABCEG')}"
        postal_code += str(rng.randint(0, 9))
    else:
        postal_code = f"{postal}{rng.randint(0, 99):02d}"
    return {
        "business_id": _new_id(rng, used),
        "name": name,
        "address": f"{rng.randint(10, 9899)} {rng.choice(STREETS)}",
        "city": city,
        "state": state,
        "postal_code": postal_code,
        "latitude": round(lat + rng.uniform(-0.08, 0.08), 7),
        "longitude": round(lon + rng.uniform(-0.08, 0.08), 7),
        "stars": stars,
        "review_count": 0,  # set once the reviews exist: never fewer than the reviews in the file
        "is_open": 1 if rng.random() < 0.8 else 0,
        "attributes": _attributes(rng, cuisine),
        "categories": cuisine.categories,
        "hours": _hours(rng),
    }


def _user(rng: random.Random, used: set[str], review_year: int) -> tuple[str, dict[str, Any]]:
    """A reviewer: (user_id, the embedded user object). Joined Yelp no later than the review's year."""
    since_year = rng.randint(2006, review_year)
    review_count = int(rng.paretovariate(1.2) * 3)
    elite_years = [str(y) for y in range(max(since_year, 2010), 2022) if rng.random() < 0.15]
    user = {
        "name": rng.choice(FIRST_NAMES),
        "review_count": max(1, min(review_count, 4000)),
        "yelping_since": _timestamp(rng, since_year, since_year),
        "elite": ",".join(elite_years) if review_count > 40 else "",
        "average_stars": round(min(5.0, max(1.0, rng.gauss(3.8, 0.6))), 2),
        "fans": int(rng.paretovariate(1.5)) - 1 if review_count > 10 else 0,
    }
    return _new_id(rng, used), user


def _stars(rng: random.Random, quality: float, label: AllergyLabel | None) -> float:
    """Review stars around the restaurant's quality; an allergy incident drags a review down hard."""
    if label is not None and label.is_incident:
        return float(rng.choice((1, 1, 1, 2)))
    if label is not None and label.staff_response == "accommodated":
        return float(rng.choice((4, 5, 5)))
    return float(max(1, min(5, round(rng.gauss(quality, 1.1)))))


def _restaurant(
    rng: random.Random, used: set[str], k: int, target: str
) -> tuple[dict[str, Any], list[tuple[str, AllergyLabel]]]:
    """One dataset line plus the (review_id, label) pairs planted in it."""
    cuisine = rng.choice(CUISINES)
    quality = rng.uniform(2.3, 4.7)
    business = _business(rng, used, cuisine, 0.0)
    low = math.ceil(0.64 * k)
    # Most restaurants reach K reviews (real K25: 2,491 reviews over 100 restaurants); a few fall short.
    n_reviews = k if rng.random() < 0.85 else rng.randint(low, max(low, k - 1))
    labels = _plan_allergy(rng, target, n_reviews)
    slots = rng.sample(range(n_reviews), len(labels))
    label_at = dict(zip(slots, labels, strict=True))
    ctx = {"name": business["name"], "city": business["city"]}

    reviews: list[dict[str, Any]] = []
    planted: list[tuple[str, AllergyLabel]] = []
    for i in range(n_reviews):
        label = label_at.get(i)
        stars = _stars(rng, quality, label)
        date = _timestamp(rng, 2010, 2021)
        user_id, user = _user(rng, used, int(date[:4]))
        review_id = _new_id(rng, used)
        if label is not None:
            planted.append((review_id, label))
        reviews.append(
            {
                "review_id": review_id,
                "user_id": user_id,
                "business_id": business["business_id"],
                "stars": stars,
                "useful": int(rng.paretovariate(2.0)) - 1 if rng.random() < 0.6 else 0,
                "funny": int(rng.paretovariate(3.0)) - 1 if rng.random() < 0.3 else 0,
                "cool": int(rng.paretovariate(2.5)) - 1 if rng.random() < 0.4 else 0,
                "text": _review_text(rng, cuisine, stars, ctx, label),
                "date": date,
                "user": user,
            }
        )
    reviews.sort(key=lambda r: r["date"], reverse=True)  # newest first, as a "top K" slice would be
    mean = sum(r["stars"] for r in reviews) / len(reviews)
    business["stars"] = max(1.0, min(5.0, round(mean * 2) / 2))
    business["review_count"] = len(reviews) + min(5000, int(rng.paretovariate(1.1) * 20))
    record = {
        "business_id": business["business_id"],
        "business": business,
        "reviews": reviews,
        "review_count_actual": len(reviews),
    }
    return record, planted


# --------------------------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------------------------


def _json_bytes(obj: Any) -> bytes:
    """Pretty JSON in insertion order (no key sorting: field order is part of the documented shapes)."""
    return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _ground_truth(
    domain: str, k: int, records: list[dict[str, Any]], planted: list[list[tuple[str, AllergyLabel]]]
) -> dict[str, Any]:
    """The ground-truth file (docs/formats.md), with the rules applied to the planted labels."""
    restaurants: dict[str, Any] = {}
    distribution = dict.fromkeys(VERDICTS, 0)
    for record, labels in zip(records, planted, strict=True):
        verdict, rule = _verdict(labels)
        distribution[verdict] += 1
        incidents = [
            {
                "review_id": review_id,
                "severity_field": "incident_severity",
                "severity_value": label.incident_severity,
                "account_type": label.account_type,
                "modifiers": _modifiers(label),
            }
            for review_id, label in labels
            if label.is_incident
        ]
        business = record["business"]
        restaurants[record["business_id"]] = {
            "name": business["name"],
            "categories": business["categories"],
            "n_reviews": record["review_count_actual"],
            "n_judgments": record["review_count_actual"],
            "ground_truth": {
                "verdict": verdict,
                "matched_rule": rule,
                "policy_id": POLICY_ID,
                "n_incidents": len(incidents),
                "incidents": incidents,
            },
        }
    return {
        "policy_id": POLICY_ID,
        "topic": TOPIC_ID,
        "domain": domain,
        "k": k,
        "computed_at": GENERATED_AT,
        "has_scoring": False,
        "restaurants": restaurants,
        "summary": {
            "total_restaurants": len(restaurants),
            "verdict_distribution": distribution,
            "missing_judgments": 0,
        },
    }


def generate(
    root: Path, *, n_restaurants: int = 100, k: int = 25, seed: int = 0, domain: str = "yelp", force: bool = False
) -> dict:
    """Write a synthetic ADDM workspace under ``root`` and return what was written.

    Returns ``{"restaurants", "reviews", "allergy_reviews", "verdicts", "files", "paths"}``: counts, the
    verdict distribution, the number of files and their paths. Raises ValueError on arguments that would
    give an unusable workspace (no restaurants, K < 1, a domain that is not a plain path component), and
    FileExistsError, before writing anything, when a file it would write exists with other content (the
    user's own data, say) unless ``force``.
    """
    if n_restaurants < 1:
        raise ValueError(f"n_restaurants must be >= 1, got {n_restaurants}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not _DOMAIN_RE.match(domain):
        raise ValueError(f"domain must match [A-Za-z0-9_-]+, got {domain!r}")
    root = Path(root)
    rng = random.Random(seed)
    used: set[str] = set()

    records: list[dict[str, Any]] = []
    planted: list[list[tuple[str, AllergyLabel]]] = []
    for target in _class_quota(rng, n_restaurants):
        record, labels = _restaurant(rng, used, k, target)
        records.append(record)
        planted.append(labels)

    dataset = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    task = {"task_id": TASK_ID, "description": TASK_DESCRIPTION, "fields": TASK_FIELDS}
    gt = _ground_truth(domain, k, records, planted)
    outputs = {
        root / "data" / "context" / domain / f"dataset_K{k}.jsonl": dataset,
        root / "data" / "tasks" / domain / f"{TASK_ID}.json": _json_bytes(task),
        root / "data" / "query" / domain / f"{POLICY_ID}_K{k}_prompt.txt": POLICY_PROMPT.format(k=k).encode(),
        root / "data" / "answers" / domain / f"{POLICY_ID}_K{k}_groundtruth.json": _json_bytes(gt),
    }
    if not force:
        for path, data in outputs.items():
            if path.exists() and (not path.is_file() or path.read_bytes() != data):
                raise FileExistsError(f"{path} exists and is not what this would write; --force replaces it")
    for path, data in outputs.items():
        atomic_write(path, data)  # readers see the old file or the new one, never half of it
    return {
        "restaurants": len(records),
        "reviews": sum(r["review_count_actual"] for r in records),
        "allergy_reviews": sum(len(labels) for labels in planted),
        "verdicts": gt["summary"]["verdict_distribution"],
        "files": len(outputs),
        "paths": [str(p) for p in outputs],
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry: generate and print one summary line; bad arguments exit 2 with one line (argparse)."""
    parser = argparse.ArgumentParser(
        description="Generate a deterministic synthetic ADDM workspace (synthetic data to try the tool on). "
        "It refuses, writing nothing, when a file it would write already exists with other content."
    )
    parser.add_argument("--root", type=Path, required=True, help="workspace root to write under")
    parser.add_argument("--restaurants", type=int, default=100, help="number of restaurants (default 100)")
    parser.add_argument("--k", type=int, default=25, help="max reviews per restaurant (default 25)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--domain", default="yelp", help="domain directory name (default yelp)")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist with other content")
    args = parser.parse_args(argv)
    try:
        summary = generate(
            args.root, n_restaurants=args.restaurants, k=args.k, seed=args.seed, domain=args.domain, force=args.force
        )
    except ValueError as exc:
        parser.error(str(exc))
    except FileExistsError as exc:
        print(f"gen_data: {exc}; nothing written", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gen_data: cannot write under {args.root}: {exc}", file=sys.stderr)
        return 1
    v = summary["verdicts"]
    print(
        f"generated {summary['restaurants']} restaurants, {summary['reviews']} reviews "
        f"({summary['allergy_reviews']} allergy), verdicts Low/High/Critical "
        f"{v['Low Risk']}/{v['High Risk']}/{v['Critical Risk']}, {summary['files']} files: "
        + ", ".join(summary["paths"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
