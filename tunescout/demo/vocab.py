"""The small shared vocabularies every demo task and the pretraining corpus draw from.

Every generator draws from small shared vocabularies (names, cities, products, ...) so that one
pretraining corpus covers them all and a byte-level BPE of ~1k tokens keeps most words whole:
prompts and answers then stay within ~20-80 tokens and answers within a few tokens, which a
~0.5M-parameter model can learn in minutes on a CPU. Labels are drawn uniformly so no class
dominates, and each task mixes templates so that memorising one surface form is not enough.
"""

from __future__ import annotations

NAMES = ("Anna Ben Carla David Elena Farid Grace Hugo Ines Jonas Kira Leo Maya Nora Omar Priya "
         "Rosa Sam Tariq Uma Victor Wendy").split()
CITIES = "Leeds Porto Oslo Lyon Graz Cork Turin Bergen Ghent Split Bilbao Dublin Krakow Seville Utrecht".split()
PRODUCTS = ("kettle", "lamp", "backpack", "blender", "jacket", "printer", "speaker", "chair", "desk",
            "mug", "toaster", "keyboard", "umbrella", "phone case", "coffee grinder")
COUNTABLES = "apples books boxes candles coins cups pencils plants shirts stamps tickets bottles".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
JOBS = ("baker", "nurse", "pilot", "teacher", "farmer", "painter", "chef", "librarian", "mechanic",
        "tailor", "bus driver", "ship captain")
ONE_WORD_JOBS = tuple(job for job in JOBS if " " not in job)
PLACES = ("the old harbor", "the north market", "the city library", "the train station",
          "the river museum", "the town hall", "the main hospital", "the flower shop")
ASPECTS = ("the battery", "the delivery", "the price", "the colour", "the sound", "the handle",
           "the packaging", "the build quality")
POS_ADJ = "great excellent lovely solid comfortable reliable perfect".split()
NEG_ADJ = "bad awful flimsy noisy disappointing broken terrible".split()
NEUTRAL = ("okay", "average", "ordinary", "as described", "about what I expected", "neither good nor bad")
UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
# Words the corpus uses often elsewhere, so a small BPE keeps them whole and sorted answers stay short.
SORT_WORDS = ("apples books boxes candles coins cups pencils plants shirts stamps tickets bottles lamp desk "
              "mug chair kettle jacket printer speaker toaster keyboard umbrella blender backpack garden "
              "tower bridge festival museum").split()
# Headline parts: (subject, past tense used in the story, present tense used in the headline).
NEWS_SUBJECTS = ("city council", "local school", "river museum", "football club", "harbor police",
                 "town library", "bus company", "science center", "hospital board", "farmers union")
NEWS_VERBS = (("approved", "approves"), ("opened", "opens"), ("cancelled", "cancels"),
              ("announced", "announces"), ("rejected", "rejects"), ("delayed", "delays"),
              ("sold", "sells"), ("repaired", "repairs"), ("bought", "buys"), ("closed", "closes"))
NEWS_OBJECTS = ("new bridge", "summer festival", "budget plan", "night market", "old tower",
                "public garden", "ferry service", "music school", "bike lanes", "rare painting")


def number_words(n: int) -> str:
    """0-99 in English words, so arithmetic prompts can spell numbers the way people write them."""
    if n < 20:
        return UNITS[n]
    tens, unit = divmod(n, 10)
    return TENS[tens - 2] + (f"-{UNITS[unit]}" if unit else "")


# Support-ticket intents (the labels) and their message templates.
SUPPORT = {
    "billing": ("I was charged twice for my {item}.", "The invoice for order {order} shows the wrong amount.",
                "Why did my card get billed {amount} euros for the {item}?", "Can I pay for the {item} in three parts?"),
    "shipping": ("Where is my {item}? I ordered it {days} days ago.", "Order {order} still has not arrived in {city}.",
                 "The tracking page for my {item} has not changed since {day}.", "Can you ship the {item} to {city} instead?"),
    "refund": ("I want my money back for the {item}.", "Please refund order {order}, the {item} came broken.",
               "How do I return the {item} and get my money back?", "I sent the {item} back on {day} but got nothing yet."),
    "account": ("I cannot log in to my account since {day}.", "Please reset my password, I am locked out.",
                "Change the email address on my account, {name} here.", "My profile shows the wrong city, it should be {city}."),
    "cancel": ("Please cancel order {order} before it ships.", "I no longer want the {item}, stop the order.",
               "End my {item} subscription from next month.", "How do I call off the {item} I ordered on {day}?"),
}
