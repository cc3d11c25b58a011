using System.Collections;
using System.Diagnostics;
using System.Management.Automation;
using System.Text;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Runs a command in a sandbox.</para>
/// <para type="description">Runs a shell command string (with the sandbox's shell) or a program with arguments in a running sandbox. Standard output lines reach the pipeline as they arrive; standard error lines go to the error stream. Data piped in (strings, bytes) becomes the command's standard input. The exit code is stored in $LASTEXITCODE, and a non-zero exit writes a SandboxCommandFailed error unless -PassThru is given.</para>
/// </summary>
[Cmdlet(VerbsLifecycle.Invoke, "SandboxCommand", DefaultParameterSetName = "Command")]
[OutputType(typeof(string), typeof(byte[]), typeof(SandboxCommandResult), typeof(SandboxCommandJob))]
public sealed class InvokeSandboxCommandCommand : SandboxCmdlet
{
    /// <summary>
    /// <para type="description">The sandbox to run in. Binds from the Name property of piped sandbox objects.</para>
    /// </summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxNameCompleter))]
    public string Name { get; set; } = "";

    /// <summary>
    /// <para type="description">A command string for the sandbox's shell (sh -c).</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Command")]
    [ValidateNotNullOrEmpty]
    public string Command { get; set; } = "";

    /// <summary>
    /// <para type="description">A program to run without a shell: an absolute path, or a name looked up on PATH in the guest.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = "FilePath")]
    [ValidateNotNullOrEmpty]
    public string FilePath { get; set; } = "";

    /// <summary>
    /// <para type="description">Run the image's own command: its Entrypoint followed by -ArgumentList, or by its Cmd when no arguments are given, as docker run does.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = "ImageCommand")]
    public SwitchParameter UseImageCommand { get; set; }

    /// <summary>
    /// <para type="description">Arguments for -FilePath, passed as they are, without shell parsing; with -UseImageCommand, they replace the image's Cmd.</para>
    /// </summary>
    [Parameter(Position = 0, ParameterSetName = "FilePath")]
    [Parameter(Position = 0, ParameterSetName = "ImageCommand")]
    public string[] ArgumentList { get; set; } = [];

    /// <summary>
    /// <para type="description">Environment variables for this command, added to the sandbox's.</para>
    /// </summary>
    [Parameter]
    public Hashtable? Environment { get; set; }

    /// <summary>
    /// <para type="description">Working directory for this command; it must exist.</para>
    /// </summary>
    [Parameter]
    public string? WorkingDirectory { get; set; }

    /// <summary>
    /// <para type="description">The user to run as: a name or uid from the sandbox's /etc/passwd, optionally with :group. Default: the sandbox's user (New-Sandbox -User, else the image's, else root).</para>
    /// </summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? User { get; set; }

    /// <summary>
    /// <para type="description">Standard input for the command. Piped strings are sent as lines (UTF-8, each followed by a line feed), bytes and byte arrays as they are, other objects as their string form. Piped sandbox objects are not input: they choose the sandbox.</para>
    /// </summary>
    [Parameter(ValueFromPipeline = true)]
    public PSObject? InputObject { get; set; }

    /// <summary>
    /// <para type="description">A host file whose bytes become the command's standard input, as they are.</para>
    /// </summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? InputFile { get; set; }

    /// <summary>
    /// <para type="description">Write standard error to the output stream with standard output, instead of as error records.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter MergeError { get; set; }

    /// <summary>
    /// <para type="description">Write standard output as byte arrays, exactly as the command wrote it, instead of as lines of text.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter AsByteStream { get; set; }

    /// <summary>
    /// <para type="description">Seconds the command may run; then its process tree in the guest is killed and a SandboxCommandTimedOut error is written.</para>
    /// </summary>
    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int Timeout { get; set; }

    /// <summary>
    /// <para type="description">Run the command in the background and return a job at once (a SandboxCommandJob, named after the sandbox, with the guest ProcessId). Receive-Job gets its output, Stop-Job kills it, and piping it to Send-SandboxSignal signals it. Standard input comes only from -InputFile.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter AsJob { get; set; }

    /// <summary>
    /// <para type="description">Return one result object (ExitCode, Stdout, Stderr, Duration) instead of streaming lines.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    // The run fed by pipeline input: started by the first input record, ended in EndProcessing.
    private CommandRun? _fed;
    private RunOutput? _fedOutput;
    private readonly MemoryStream _pendingBytes = new();

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        object? input = InputObject?.BaseObject;
        bool piped = input is not null and not Sandbox && MyInvocation.BoundParameters.ContainsKey(nameof(InputObject));
        if (AsJob)
        {
            if (piped)
            {
                ThrowTerminatingError(new ErrorRecord(
                    new ArgumentException("A job takes standard input from -InputFile only, not the pipeline."),
                    "InputConflict", ErrorCategory.InvalidArgument, input));
            }

            StartJob();
            return;
        }

        if (!piped)
        {
            // A piped sandbox (or nothing piped) chooses where the command runs: one run per record.
            RunOnce();
            return;
        }

        if (_fed is null)
        {
            if (InputFile is not null)
            {
                ThrowTerminatingError(new ErrorRecord(
                    new ArgumentException("Give standard input either by -InputFile or by -InputObject, not both."),
                    "InputConflict", ErrorCategory.InvalidArgument, InputFile));
            }

            _fedOutput = new RunOutput(this);
            _fed = Start(withStdin: true);
            if (_fed is null)
            {
                return;
            }
        }

        foreach (ReadOnlyMemory<byte> chunk in ToBytes(input!))
        {
            if (!_fed.WriteInput(chunk, _fedOutput!.Handle))
            {
                // The command has ended; it takes no more input.
                break;
            }
        }

        foreach (ExecEvent e in _fed.Available())
        {
            _fedOutput!.Handle(e);
        }
    }

    /// <inheritdoc/>
    protected override void EndProcessing()
    {
        if (_fed is null)
        {
            return;
        }

        using (_fed)
        {
            if (_pendingBytes.Length > 0)
            {
                _ = _fed.WriteInput(FlushPendingBytes(), _fedOutput!.Handle);
            }

            _fed.CompleteInput();
            Finish(_fed, _fedOutput!);
        }

        _fed = null;
    }

    // Ctrl+C only cancels (the base class does): the pipeline thread may still be in the fed
    // run's WriteInput or Next, so the run is disposed there, when PowerShell disposes the cmdlet.

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _fed?.Dispose();
            _fed = null;
            _pendingBytes.Dispose();
        }

        base.Dispose(disposing);
    }

    private void StartJob()
    {
        string? inputFile = null;
        if (InputFile is not null)
        {
            inputFile = GetUnresolvedProviderPathFromPSPath(InputFile);
            if (!File.Exists(inputFile))
            {
                WriteError(new ErrorRecord(new FileNotFoundException($"The input file '{inputFile}' does not exist."),
                    "InputFileNotFound", ErrorCategory.ObjectNotFound, InputFile));
                return;
            }
        }

        var job = new SandboxCommandJob(new RunOutput(this).DisplayText, Name);
        JobRepository.Add(job);
        job.Start(Engine, NewCommand(), MergeError, AsByteStream, inputFile);
        WriteObject(job);
    }

    private void RunOnce()
    {
        var output = new RunOutput(this);
        using CommandRun? run = Start(withStdin: InputFile is not null);
        if (run is null)
        {
            return;
        }

        if (InputFile is not null && !FeedFile(run, output))
        {
            return;
        }

        run.CompleteInput();
        Finish(run, output);
    }

    private CommandRun? Start(bool withStdin) => new CommandRun(Engine, Name, NewCommand(), withStdin, Cancellation);

    private SandboxCommand NewCommand() => new()
    {
        Script = ParameterSetName == "Command" ? Command : null,
        Arguments = ParameterSetName switch
        {
            "FilePath" => [FilePath, .. ArgumentList],
            "ImageCommand" => ArgumentList,
            _ => null,
        },
        Environment = ToDictionary(Environment),
        WorkingDirectory = WorkingDirectory,
        User = User,
        UseImageCommand = UseImageCommand,
        Timeout = Timeout > 0 ? TimeSpan.FromSeconds(Timeout) : null,
    };

    private bool FeedFile(CommandRun run, RunOutput output)
    {
        string path = GetUnresolvedProviderPathFromPSPath(InputFile);
        FileStream file;
        try
        {
            file = File.OpenRead(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            WriteError(new ErrorRecord(ex, "InputFileNotFound", ErrorCategory.ObjectNotFound, InputFile));
            return false;
        }

        using (file)
        {
            var buffer = new byte[64 * 1024];
            int n;
            while ((n = file.Read(buffer)) > 0)
            {
                // The channel keeps the chunk until it is sent: each gets its own array.
                if (!run.WriteInput(buffer.AsSpan(0, n).ToArray(), output.Handle))
                {
                    break;
                }
            }
        }

        return true;
    }

    // Runs the command to its end on the pipeline thread, then reports the exit code.
    private void Finish(CommandRun run, RunOutput output)
    {
        try
        {
            while (run.Next() is { } e)
            {
                output.Handle(e);
            }
        }
        catch (SandboxException ex)
        {
            // Set first: with -ErrorAction Stop the error ends the cmdlet.
            SessionState.PSVariable.Set("global:LASTEXITCODE", CommandRun.ExitCodeOf(ex));
            WriteSandboxError(ex);
            return;
        }

        output.Complete();
    }

    // Piped bytes arrive one per record: they are gathered into chunks, which strings flush.
    private IEnumerable<ReadOnlyMemory<byte>> ToBytes(object input)
    {
        switch (input)
        {
            case byte b:
                _pendingBytes.WriteByte(b);
                if (_pendingBytes.Length >= 64 * 1024)
                {
                    yield return FlushPendingBytes();
                }

                yield break;
            case byte[] bytes:
                if (_pendingBytes.Length > 0)
                {
                    yield return FlushPendingBytes();
                }

                yield return bytes.ToArray();
                yield break;
            case string text:
                if (_pendingBytes.Length > 0)
                {
                    yield return FlushPendingBytes();
                }

                yield return Encoding.UTF8.GetBytes(text + "\n");
                yield break;
            case IEnumerable items:
                foreach (object? item in items)
                {
                    if (item is not null)
                    {
                        foreach (ReadOnlyMemory<byte> chunk in ToBytes(PSObject.AsPSObject(item).BaseObject))
                        {
                            yield return chunk;
                        }
                    }
                }

                yield break;
            default:
                foreach (ReadOnlyMemory<byte> chunk in ToBytes(LanguagePrimitives.ConvertTo<string>(input)))
                {
                    yield return chunk;
                }

                yield break;
        }
    }

    private byte[] FlushPendingBytes()
    {
        byte[] chunk = _pendingBytes.ToArray();
        _pendingBytes.SetLength(0);
        return chunk;
    }

    /// <summary>What one run writes to the pipeline, in the order the events came.</summary>
    private sealed class RunOutput
    {
        private readonly InvokeSandboxCommandCommand _cmdlet;
        private readonly LineSplitter _stdout;
        private readonly LineSplitter _stderr;
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private readonly DateTimeOffset _started = DateTimeOffset.Now;
        private int? _exitCode;
        private bool _timedOut;

        public RunOutput(InvokeSandboxCommandCommand cmdlet)
        {
            _cmdlet = cmdlet;
            _stdout = new LineSplitter(keepText: cmdlet.PassThru);
            _stderr = new LineSplitter(keepText: cmdlet.PassThru);
        }

        /// <summary>The command as the user gave it, for messages and the job's command.</summary>
        public string DisplayText => Display;

        private string Display => _cmdlet.ParameterSetName switch
        {
            "Command" => _cmdlet.Command,
            "ImageCommand" => string.Join(' ', ["(image command)", .. _cmdlet.ArgumentList]),
            _ => string.Join(' ', [_cmdlet.FilePath, .. _cmdlet.ArgumentList]),
        };

        public void Handle(ExecEvent e)
        {
            switch (e.Kind)
            {
                case ExecEventKind.Started:
                    _cmdlet.WriteDebug($"Started process {e.Pid} in sandbox '{_cmdlet.Name}'.");
                    break;
                case ExecEventKind.Output:
                    bool isError = e.Stream == OutputChannel.Stderr && !_cmdlet.MergeError;
                    if (_cmdlet.AsByteStream && !isError && !_cmdlet.PassThru)
                    {
                        _cmdlet.WriteObject(e.Data.ToArray(), enumerateCollection: false);
                        break;
                    }

                    LineSplitter splitter = e.Stream == OutputChannel.Stdout ? _stdout : _stderr;
                    foreach (string line in splitter.Add(e.Data.Span))
                    {
                        Write(line, isError);
                    }

                    break;
                case ExecEventKind.Exited:
                    _exitCode = e.ExitCode;
                    _timedOut = e.TimedOut;
                    break;
            }
        }

        public void Complete()
        {
            if (_stdout.Flush() is { } lastOut)
            {
                Write(lastOut, isError: false);
            }

            if (_stderr.Flush() is { } lastErr)
            {
                Write(lastErr, isError: !_cmdlet.MergeError);
            }

            int code = _exitCode ?? -1;
            _cmdlet.SessionState.PSVariable.Set("global:LASTEXITCODE", code);
            _cmdlet.WriteVerbose(
                $"'{Display}' exited with code {code} after {_clock.Elapsed.TotalMilliseconds:0} ms.");
            if (_timedOut)
            {
                _cmdlet.WriteSandboxError(new SandboxException("SandboxCommandTimedOut", SandboxErrorKind.Timeout,
                    $"The command '{Display}' ran longer than {_cmdlet.Timeout} s in sandbox '{_cmdlet.Name}'; "
                    + $"its process tree was killed (exit code {code}).", _cmdlet.Name));
            }

            if (_cmdlet.PassThru)
            {
                _cmdlet.WriteObject(new SandboxCommandResult(
                    _cmdlet.Name, Display, code, _stdout.Text, _stderr.Text, _started, _clock.Elapsed));
            }
            else if (code == ShellCommandNotFound && _cmdlet.ParameterSetName == "Command")
            {
                // Shells exit with 127 when a command word names no program; that is the one
                // failure of a command string they tell apart from the program's own exit codes.
                _cmdlet.WriteSandboxError(new SandboxException("CommandNotFound", SandboxErrorKind.NotFound,
                    $"The shell in sandbox '{_cmdlet.Name}' found no program for a command of '{Display}' "
                    + $"(exit code {code}); its error output says which.", _cmdlet.Name));
            }
            else if (code != 0 && !_timedOut)
            {
                _cmdlet.WriteSandboxError(new SandboxException("SandboxCommandFailed", SandboxErrorKind.InvalidResult,
                    $"The command '{Display}' exited with code {code} in sandbox '{_cmdlet.Name}'.", _cmdlet.Name));
            }
        }

        /// <summary>The exit code POSIX shells give a command that names no program.</summary>
        private const int ShellCommandNotFound = 127;

        private void Write(string line, bool isError)
        {
            if (_cmdlet.PassThru)
            {
                return;
            }

            if (isError)
            {
                _cmdlet.WriteError(new ErrorRecord(
                    new RemoteException(line), "SandboxCommandStderr", ErrorCategory.FromStdErr, _cmdlet.Name));
            }
            else
            {
                _cmdlet.WriteObject(line);
            }
        }
    }
}
