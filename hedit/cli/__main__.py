from hedit.cli import main

main()
