"""plan: profiles + demand + prices → the cheapest fleet (pure functions, no torch, no I/O
but the file readers in ``formats``)."""
