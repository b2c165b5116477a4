"""Tortoise models (tables) and the database set-up that opens and closes them."""
