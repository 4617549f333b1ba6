using System.Net;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>Distinct keys, reproducible from a seed.</summary>
internal static class PartitionKeys
{
    /// <summary><paramref name="count"/> distinct random ints.</summary>
    public static int[] Ints(int count, int seed)
    {
        var random = new Random(seed);
        var seen = new HashSet<int>(count);
        var keys = new int[count];
        for (int i = 0; i < count;)
        {
            int key = random.Next(int.MinValue, int.MaxValue);
            if (seen.Add(key))
            {
                keys[i++] = key;
            }
        }

        return keys;
    }

    /// <summary><paramref name="count"/> distinct dotted-quad strings ("203.0.113.7") of random 32-bit addresses.</summary>
    public static string[] IPv4(int count, int seed)
    {
        var random = new Random(seed);
        var seen = new HashSet<uint>(count);
        var keys = new string[count];
        for (int i = 0; i < count;)
        {
            uint address = (uint)random.NextInt64(0, 1L << 32);
            if (seen.Add(address))
            {
                keys[i++] = string.Create(
                    System.Globalization.CultureInfo.InvariantCulture,
                    $"{address >> 24}.{(address >> 16) & 0xFF}.{(address >> 8) & 0xFF}.{address & 0xFF}");
            }
        }

        return keys;
    }

    /// <summary>
    /// <paramref name="count"/> distinct IPv6 strings in 2001:db8::/32 with 96 random bits, formatted by
    /// <see cref="IPAddress.ToString"/> ("2001:db8:85a3:8d3:1319:8a2e:370:7348", 35–39 characters).
    /// </summary>
    public static string[] IPv6(int count, int seed)
    {
        var random = new Random(seed);
        var seen = new HashSet<UInt128>(count);
        var keys = new string[count];
        Span<byte> bytes = stackalloc byte[16];
        for (int i = 0; i < count;)
        {
            bytes[0] = 0x20;
            bytes[1] = 0x01;
            bytes[2] = 0x0d;
            bytes[3] = 0xb8;
            random.NextBytes(bytes[4..]);
            if (seen.Add(System.Buffers.Binary.BinaryPrimitives.ReadUInt128BigEndian(bytes)))
            {
                keys[i++] = new IPAddress(bytes).ToString();
            }
        }

        return keys;
    }

    /// <summary><paramref name="count"/> random indices below <paramref name="keys"/>: the order a hot-key thread visits its keys in.</summary>
    public static int[] Order(int count, int keys, int seed)
    {
        var random = new Random(seed);
        var order = new int[count];
        for (int i = 0; i < order.Length; i++)
        {
            order[i] = random.Next(keys);
        }

        return order;
    }
}
