from hashveil.cli import main

main()
