from fashion_mlp.cli import main

main()
