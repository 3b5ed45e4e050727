from xenlvm.cli import main

main(prog_name="xenlvm")
