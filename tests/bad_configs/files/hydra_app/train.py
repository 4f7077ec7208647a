"""A Hydra app the hydra_app_* cases name (planning refuses each case before anything runs)."""
import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> None:
    print(cfg)


if __name__ == "__main__":
    main()
