"""The API's models: ``types`` (addresses, exact integers), ``queries`` (what a request may
ask), ``resources`` (what the API answers)."""
