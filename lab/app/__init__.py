"""CloudMart: the reference online-shop backend the gameday harness runs its chaos against."""
