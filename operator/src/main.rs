//! The `berth` binary: parses the command line and hands over to [`berth::cli`].

fn main() -> std::process::ExitCode {
    let cli = berth::cli::parse();
    let serving = matches!(
        cli.command,
        berth::cli::Command::Operator { .. }
            | berth::cli::Command::Up { .. }
            | berth::cli::Command::Agent(_)
    );
    // A command whose output goes to a pipe that closes (`berth get ws |
    // head -1`) ends quietly, as kubectl does (it dies of SIGPIPE: status
    // 141), instead of printing a panic about println!.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    // sqlx reports PostgreSQL's NOTICEs (e.g. "relation … already exists,
    // skipping") at INFO: they are not news to the operator's user.
    let default_filter = if serving {
        "info,sqlx::postgres::notice=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(berth::cli::run(cli));
    std::process::ExitCode::from(code)
}
