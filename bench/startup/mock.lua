return { rules = { { reply = { text = "Hello." } } } }
