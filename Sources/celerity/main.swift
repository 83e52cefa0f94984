print("celerity")
