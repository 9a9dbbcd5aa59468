"""One module per user-facing command; each is a plain function of the config with keyword-only
arguments, whose body reads as the command's numbered algorithm. ``squashkit.cli`` only parses
arguments and calls these; anything the command line can do, Python can do through them.

    backup    a verified bundle of every PostgreSQL database of an environment
    check     one finding per question a later command would otherwise answer by failing
    restore   an environment rebuilt from a bundle, after a safety backup
    squash    migration zero on one environment
    promote   one environment's data into another (optionally squashing first)
    rollback  an environment put back from a bundle, a db.json, or the database a run kept
    resume    a killed run finished or undone, from its journal
    kept      status of the last runs; what squashkit keeps, and cleaning it up
"""
