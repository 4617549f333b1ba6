using System.Reflection;
using System.Reflection.Emit;
using RateEngine.Algorithms;
using RateEngine.Limiters;
using RateEngine.Partitioning;

namespace RateEngine.Tests.Architecture;

/// <summary>
/// The layers of src/DESIGN.md, checked on the built assembly: which namespace may use which. A type "uses" another
/// when it names it anywhere: base type, interfaces, fields, signatures, generic arguments, or in a method body.
/// </summary>
public class ArchitectureTests
{
    private const string Root = "RateEngine";
    private const string Algorithms = "RateEngine.Algorithms";
    private const string Timing = "RateEngine.Timing";
    private const string Limiters = "RateEngine.Limiters";
    private const string Partitioning = "RateEngine.Partitioning";
    private const string Budgets = "RateEngine.Budgets";
    private const string Policies = "RateEngine.Policies";

    /// <summary>What each layer may use besides itself. Arrows point down; nothing points up.</summary>
    private static readonly Dictionary<string, string[]> Allowed = new()
    {
        [Timing] = [],
        [Algorithms] = [Timing],
        [Limiters] = [Algorithms, Timing, Root],
        [Partitioning] = [Limiters, Algorithms, Timing, Root],
        [Budgets] = [Limiters, Algorithms, Timing, Root],
        [Policies] = [Budgets, Partitioning, Limiters, Algorithms, Timing, Root],
        [Root] = [Policies, Budgets, Partitioning, Limiters, Algorithms, Timing],
    };

    private static readonly Assembly Core = typeof(RateEngineLimiter).Assembly;

    [Fact]
    public void Core_EveryTypeUsesOnlyTheLayersBelowIt()
    {
        List<string> violations = [];
        foreach ((Type user, Type used) in Arrows(Core))
        {
            string from = Layer(user);
            string to = Layer(used);
            if (from != to && !Allowed[from].Contains(to))
            {
                violations.Add($"{Name(user)} ({from}) uses {Name(used)} ({to})");
            }
        }

        Assert.True(violations.Count == 0, "wrong arrows:\n" + string.Join("\n", violations.Distinct().Order()));
    }

    [Fact]
    public void Core_EveryNamespaceIsALayer()
    {
        // A new folder is a new layer: give it its arrows above before using it.
        Assert.All(Types(Core), type => Assert.Contains(Layer(type), Allowed.Keys));
    }

    [Fact]
    public void Core_PublicTypesAreInTheRootNamespaceAndInternalsInTheirFolders()
    {
        Assert.All(Types(Core).Where(type => type.IsVisible), type => Assert.Equal(Root, type.Namespace));
    }

    [Fact]
    public void Core_ReferencesNoPackageBeyondTheRateLimitingAbstractions()
    {
        // System.Threading.RateLimiting is the abstraction the core implements; everything else is the base library.
        string[] references = [.. Core.GetReferencedAssemblies().Select(name => name.Name!)];
        Assert.Contains("System.Threading.RateLimiting", references);
        Assert.All(references, name => Assert.True(
            name.StartsWith("System.", StringComparison.Ordinal) || name is "netstandard" or "mscorlib",
            $"the core references {name}: adapters with dependencies belong in their own assembly"));
    }

    [Fact]
    public void Arrows_SeeSignaturesAndMethodBodies()
    {
        // The checker itself: arrows it must find, through a field and only inside method bodies (a call, a newobj).
        HashSet<(Type, Type)> arrows = [.. Arrows(Core)];
        Assert.Contains((typeof(EnginePartitionedLimiter<,,,>), typeof(PartitionTable<,>)), arrows);
        Assert.Contains((typeof(LimiterParts), typeof(AlgorithmHost<,>)), arrows);
        Assert.Contains((typeof(PartitionTier<,>), typeof(ThrowHelper)), arrows);
        Assert.DoesNotContain(arrows, arrow => arrow.Item1 == typeof(FixedWindow) && Layer(arrow.Item2) == Limiters);
    }

    private static IEnumerable<Type> Types(Assembly assembly) =>
        assembly.GetTypes().Where(type => type.Namespace is not null && !type.Name.StartsWith('<') && type.DeclaringType is null
            && type.Namespace.StartsWith(Root, StringComparison.Ordinal));

    private static string Layer(Type type) => (Outermost(type).Namespace ?? "").Split('.') switch
    {
        [_] => Root,
        [_, var folder, ..] => $"{Root}.{folder}",
        _ => "",
    };

    private static Type Outermost(Type type)
    {
        while (type.DeclaringType is not null)
        {
            type = type.DeclaringType;
        }

        return type;
    }

    private static string Name(Type type) => Outermost(type).Name;

    /// <summary>Every (user, used) pair of core types, users taken as their outermost declaring type.</summary>
    private static IEnumerable<(Type User, Type Used)> Arrows(Assembly assembly)
    {
        const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        foreach (Type type in assembly.GetTypes())
        {
            Type user = Generic(Outermost(type));
            var named = new List<Type?> { type.BaseType };
            named.AddRange(type.GetInterfaces());
            named.AddRange(type.GetFields(All).Select(field => field.FieldType));
            named.AddRange(type.GetProperties(All).Select(property => property.PropertyType));
            foreach (MethodBase method in type.GetMethods(All).Cast<MethodBase>().Concat(type.GetConstructors(All)))
            {
                if (method is MethodInfo info)
                {
                    named.Add(info.ReturnType);
                }

                named.AddRange(method.GetParameters().Select(parameter => parameter.ParameterType));
                named.AddRange(BodyReferences(method));
            }

            foreach (Type used in named.OfType<Type>().SelectMany(Flatten).Where(t => t.Assembly == assembly).Select(t => Generic(Outermost(t))))
            {
                if (used != user && !used.Name.StartsWith('<'))
                {
                    yield return (user, used);
                }
            }
        }
    }

    private static Type Generic(Type type) => type.IsGenericType ? type.GetGenericTypeDefinition() : type;

    /// <summary>A type with its element and generic argument types.</summary>
    private static IEnumerable<Type> Flatten(Type type)
    {
        if (type.HasElementType)
        {
            return Flatten(type.GetElementType()!);
        }

        if (type.IsGenericParameter)
        {
            return [];
        }

        return type.IsGenericType ? type.GetGenericArguments().SelectMany(Flatten).Prepend(type) : [type];
    }

    /// <summary>The types a method body names: the operands of its call, field, type and token instructions.</summary>
    private static IEnumerable<Type> BodyReferences(MethodBase method)
    {
        byte[]? il = method.GetMethodBody()?.GetILAsByteArray();
        if (il is null)
        {
            yield break;
        }

        Type[]? typeArguments = method.DeclaringType is { IsGenericType: true } declaring ? declaring.GetGenericArguments() : null;
        Type[]? methodArguments = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (int i = 0; i < il.Length;)
        {
            OpCode code = il[i] == 0xFE ? TwoByte[il[i + 1]] : OneByte[il[i]];
            i += code.Size;
            int operand = OperandSize(code, il, i);
            if (code.OperandType is OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType or OperandType.InlineTok)
            {
                MemberInfo member = method.Module.ResolveMember(BitConverter.ToInt32(il, i), typeArguments, methodArguments)!;
                switch (member)
                {
                    case Type type:
                        yield return type;
                        break;
                    case MemberInfo other when other.DeclaringType is { } owner:
                        yield return owner;
                        if (other is MethodInfo called)
                        {
                            yield return called.ReturnType;
                            foreach (Type argument in called.IsGenericMethod ? called.GetGenericArguments() : [])
                            {
                                yield return argument;
                            }
                        }
                        else if (other is FieldInfo field)
                        {
                            yield return field.FieldType;
                        }

                        break;
                }
            }

            i += operand;
        }
    }

    private static int OperandSize(OpCode code, byte[] il, int at) => code.OperandType switch
    {
        OperandType.InlineNone => 0,
        OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
        OperandType.InlineVar => 2,
        OperandType.InlineI8 or OperandType.InlineR => 8,
        OperandType.InlineSwitch => 4 + (4 * BitConverter.ToInt32(il, at)),
        _ => 4,
    };

    private static readonly OpCode[] OneByte = new OpCode[0x100];
    private static readonly OpCode[] TwoByte = new OpCode[0x100];

#pragma warning disable CA1810 // the opcode tables are built once from the OpCodes fields
    static ArchitectureTests()
#pragma warning restore CA1810
    {
        foreach (FieldInfo field in typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static))
        {
            var code = (OpCode)field.GetValue(null)!;
            if (code.Size == 1)
            {
                OneByte[code.Value & 0xFF] = code;
            }
            else
            {
                TwoByte[code.Value & 0xFF] = code;
            }
        }
    }
}
