"""What the dataset suite builds: two days of a small prompt table."""

DAYS = ("2026-11-20", "2026-11-21")
#: A dotted prompt id, a seed pinned (so day two repeats day one's whale) and a FAILED prompt.
TABLE = """prompt_id,prompt,seed,steps,aspect_ratio
fox,a red fox in snow,,1,1:1
whale.v2,a humpback whale breaching,11,1,16:9
tower,a spiral library tower,,1,9:21
blocked,something nsfw,,1,1:1
"""
