using System.Globalization;
using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Sends a signal to a process running in a sandbox.</para>
/// <para type="description">Sends a Linux signal (TERM by default) to a process in a running sandbox by its process id in the guest, such as the ProcessId of a job from Invoke-SandboxCommand -AsJob, which binds from the pipeline. With -ProcessTree every process it started gets the signal too.</para>
/// </summary>
[Cmdlet(VerbsCommunications.Send, "SandboxSignal", SupportsShouldProcess = true)]
[OutputType(typeof(void))]
public sealed class SendSandboxSignalCommand : SandboxCmdlet
{
    private static readonly Dictionary<string, int> Signals = new(StringComparer.OrdinalIgnoreCase)
    {
        ["HUP"] = 1, ["INT"] = 2, ["QUIT"] = 3, ["KILL"] = 9, ["USR1"] = 10, ["USR2"] = 12, ["ALRM"] = 14,
        ["TERM"] = 15, ["CONT"] = 18, ["STOP"] = 19, ["TSTP"] = 20, ["WINCH"] = 28,
    };

    /// <summary>
    /// <para type="description">The sandbox the process runs in. Binds from the Name property of piped objects (sandboxes, and jobs of Invoke-SandboxCommand -AsJob, which are named after their sandbox).</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxNameCompleter))]
    public string Name { get; set; } = "";

    /// <summary>
    /// <para type="description">The process id in the guest. Binds from the ProcessId property of piped jobs of Invoke-SandboxCommand -AsJob.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [Alias("Pid")]
    [ValidateRange(1, int.MaxValue)]
    public int ProcessId { get; set; }

    /// <summary>
    /// <para type="description">The signal: a name (TERM, SIGTERM, INT, KILL, HUP, QUIT, USR1, USR2, ALRM, CONT, STOP, TSTP, WINCH) or a number from 1 to 64. Default: TERM.</para>
    /// </summary>
    [Parameter(Position = 2)]
    [ValidateNotNullOrEmpty]
    public string Signal { get; set; } = "TERM";

    /// <summary>
    /// <para type="description">Send the signal to every process the target started too, children and their children.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter ProcessTree { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        if (!TryParseSignal(Signal, out int number))
        {
            WriteError(new ErrorRecord(
                new ArgumentException($"'{Signal}' is not a signal: give a name such as TERM, or 1 to 64."),
                "InvalidSignal", ErrorCategory.InvalidArgument, Signal));
            return;
        }

        if (!ShouldProcess($"process {ProcessId} in sandbox '{Name}'", $"Send signal {number}"))
        {
            return;
        }

        try
        {
            Run(async (_, token) =>
            {
                await Engine.SignalAsync(Name, ProcessId, number, ProcessTree, token).ConfigureAwait(false);
                return true;
            });
            WriteVerbose($"Sent signal {number} to process {ProcessId} in sandbox '{Name}'.");
        }
        catch (SandboxException ex)
        {
            WriteSandboxError(ex);
        }
    }

    private static bool TryParseSignal(string text, out int number)
    {
        string name = text.StartsWith("SIG", StringComparison.OrdinalIgnoreCase) ? text[3..] : text;
        if (Signals.TryGetValue(name, out number))
        {
            return true;
        }

        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out number)
            && number is >= 1 and <= 64;
    }
}
