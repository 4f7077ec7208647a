"""Configuration: Hydra composition (compose), the structured schema (schema: the one config reference,
each kind's section included), your own config directories and the site default, Hydra's own settings,
the folder placeholders, the stage environments, and `launcher configs` / `plan --cfg`. Imports nothing
of plan/, run/, reports/, slurm/ or local/."""
